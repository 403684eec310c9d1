"""Task heads (nn only) on a decoder-only LLaMA backbone.

A head is a small `nn.Module` that reads the backbone's hidden states and returns task-shaped
logits (`forward`) and the task's loss on them (`loss`). The backbone is shared by every head of
a `TaskModel`, which is what lets a multi-task intermediate stage train one backbone under several
heads, and lets FSDP2 shard one module tree. Heads hold no global state: everything a head needs
at run time is in its parameters, its `layer` attribute, or the batch.

The data side of each kind (features, batches, predictions) is in `raysweep.tasks.encoding`;
the batch keys a head reads are the ones its encoder's `collate` writes.

| kind              | logits per batch          | loss                                      |
| ----------------- | ------------------------- | ----------------------------------------- |
| `seq_cls`         | B x num_labels            | cross-entropy on `labels`                 |
| `multiple_choice` | B x C (one score/choice)  | cross-entropy over choices                |
| `token_cls`       | B x T x num_labels        | cross-entropy, -100 off first sub-tokens  |
| `span_qa`         | B x T x 2 (start, end)    | mean of start and end cross-entropies     |
| `retrieval`       | B x H (pooled embedding)  | in-batch softmax over (query, positive)   |
| `causal_lm`       | B x T x V                 | next-token cross-entropy                  |

Pooling follows the transformers classes: `LlamaForSequenceClassification` scores the last
non-pad token; we do the same (sequence classification, multiple choice), from the attention
mask. Retrieval mean-pools the content tokens of a configurable hidden layer.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.tasks.base import HeadKind, Task


def last_token(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Hidden state of the last non-pad token of each row (right padding)."""
    last = attention_mask.long().sum(-1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of the hidden states where `mask` is 1 (rows with an empty mask pool to zero)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


class Head(nn.Module):
    kind: ClassVar[HeadKind]
    # Which hidden layer the head reads: None = the final (normed) output of the backbone;
    # k indexes LlamaModel's hidden_states (0 = embeddings, num_hidden_layers = final output).
    layer: int | None = None

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__()
        self.task_name = task.name

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError


class SequenceClassificationHead(Head):
    """Single sentence or sentence pair -> one of `task.num_labels` classes."""

    kind = "seq_cls"

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        # transformers' LlamaForSequenceClassification uses a bias-free `score` layer.
        self.score = nn.Linear(hidden_size, task.num_labels, bias=False)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return self.score(last_token(hidden, batch["attention_mask"]))

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class MultipleChoiceHead(Head):
    """Context + each choice -> one score per choice (last non-pad token); softmax over choices.

    Batches are B x C x T (`TaskModel.forward` flattens them for the backbone and reshapes the
    per-row scores back to B x C). Padded choices are masked out by `choice_mask` (B x C)."""

    kind = "multiple_choice"

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        self.score = nn.Linear(hidden_size, 1)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        scores = self.score(last_token(hidden, batch["attention_mask"])).squeeze(-1)  # (B*C,)
        if "choice_mask" in batch:
            keep = batch["choice_mask"].reshape(-1).bool()
            scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        return scores

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])


class TokenClassificationHead(Head):
    """One tag per token; the encoder labels only the first sub-token of each word."""

    kind = "token_cls"

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        self.classifier = nn.Linear(hidden_size, task.num_labels)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return self.classifier(hidden)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),
                               ignore_index=-100)


class SpanQAHead(Head):
    """Extractive QA: start/end logits over the tokens of `question + context`; position 0 (BOS)
    is the "no answer" position."""

    kind = "span_qa"

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return self.qa_outputs(hidden)  # B x T x 2

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        start, end = logits.float().unbind(-1)
        return (F.cross_entropy(start, batch["start_positions"])
                + F.cross_entropy(end, batch["end_positions"])) / 2


class RetrievalHead(Head):
    """Sentence embeddings: mean-pooled hidden states of layer `self.layer` over `pool_mask` (the
    non-special tokens). No parameters. The engine sets the layer: `model.heads[task].layer = k`
    (an index into LlamaModel's hidden_states; None = the final normed output).

    Fine-tuning (where XTREME-R's protocol trains a retrieval task: LAReQA, Mewsli-X) takes
    batches of (query, positive) pairs, B x 2 x T, whose embeddings come back B x 2 x H; the loss
    is XTREME-R's `BertForRetrieval` (`third_party/bert.py`): cross-entropy over the B x B
    scaled cosine similarities of the L2-normalized query and positive embeddings, the i-th
    positive being query i's label (the other positives of the batch are its negatives; with
    several ranks, those of its rank's slice, as under the original's DataParallel). The scale
    is the original's initial `logit_scale`, 100, held fixed: a learned scalar would be this
    head's only parameter, and at the original's learning rates it barely moves."""

    kind = "retrieval"
    logit_scale: float = 100.0

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None,
                 layer: int | None = None):
        super().__init__(hidden_size, task)
        self.layer = layer

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        mask = batch.get("pool_mask", batch["attention_mask"])
        mask = mask.reshape(-1, mask.shape[-1])  # pairs: B x 2 x T -> 2B x T, as the hidden
        empty = mask.sum(-1, keepdim=True) == 0
        mask = torch.where(empty, batch["attention_mask"], mask)
        return mean_pool(hidden.float(), mask)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        if logits.dim() != 3 or logits.shape[1] != 2:
            raise ValueError("the retrieval loss takes (query, positive) pairs: embeddings "
                             f"B x 2 x H, got {tuple(logits.shape)}")
        q, a = F.normalize(logits[:, 0].float(), dim=-1), F.normalize(logits[:, 1].float(), dim=-1)
        scores = self.logit_scale * q @ a.T
        return F.cross_entropy(scores, torch.arange(len(q), device=scores.device))


class CausalLMHead(Head):
    """Next-token prediction: the pretraining objective and multilingual LM mixing."""

    kind = "causal_lm"

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        assert vocab_size is not None, "the LM head needs the vocabulary size"
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return self.lm_head(hidden)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
        )


HEADS: dict[str, type[Head]] = {
    cls.kind: cls
    for cls in (SequenceClassificationHead, MultipleChoiceHead, TokenClassificationHead,
                SpanQAHead, RetrievalHead, CausalLMHead)
}
