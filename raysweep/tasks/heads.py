"""Task heads on a decoder-only LLaMA backbone, and the encoders that feed them.

A head is a small `nn.Module` that reads the backbone's hidden states and returns task-shaped
logits; the backbone (`transformers.LlamaModel`) is shared by every head of a `TaskModel`
(`raysweep.model.task_model`), which is what lets a multi-task intermediate stage train one backbone under
several heads, and lets FSDP2 shard one module tree. Heads hold no global state: everything a head
needs at run time is in its parameters, its `layer` attribute, or the batch.

Each head class also owns the data side for its kind, as classmethods:
- `encode(split, tokenizer, max_length)`: canonical examples -> a list of feature dicts
  (lists of ints; every feature carries `example_index`, its example's position in the split);
- `collate(features, pad_id)`: features -> a batch of tensors (right padding);
- `predict(split, features, logits)`: all logits of a split -> one prediction per example, in the
  form the task's metric takes.

One generic loop evaluates every kind:

    features = H.encode(split, tokenizer, max_length)
    logits = [model(task, H.collate(features[i:i + bs], pad_id))
              for i in range(0, len(features), bs)]          # batches in feature order
    predictions = H.predict(split, features, logits)

`predict` pairs the rows of the logits batches, in order, with `features`: the engine must keep
the features in the order `encode` returned them and must not drop any. Feature keys that are not
tensors (`offsets` for span QA, `word_ids` for tagging, `side`/`candidate_index` for retrieval)
are read by `predict` from the feature list, not from the batch; `collate` ignores them.

Heads and their prediction formats (what `raysweep.tasks.metrics` takes):

| kind              | logits per batch          | prediction per example               |
| ----------------- | ------------------------- | ------------------------------------ |
| `seq_cls`         | B x num_labels            | label id (int)                       |
| `multiple_choice` | B x C (one score/choice)  | choice index (int)                   |
| `token_cls`       | B x T x num_labels        | tuple of tag strings, one per word   |
| `span_qa`         | B x T x 2 (start, end)    | answer text (str; "" = no answer)    |
| `retrieval`       | B x H (pooled embedding)  | `Ranking`: candidate ids, best first |
| `causal_lm`       | B x T x V                 | (summed NLL, number of tokens)       |

Pooling follows the transformers classes: `LlamaForSequenceClassification` scores the last
non-pad token; we do the same (sequence classification, multiple choice), from the attention
mask. Token classification labels the first sub-token of each word. Span QA follows transformers'
`run_qa.py`: question then context, the context windowed with a document stride, n-best span
decoding over all windows of an example; position 0 (the BOS token) is the "no answer" position.
Retrieval mean-pools the content tokens of a configurable hidden layer and ranks by cosine.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from raysweep.tasks.base import (
    ChoiceExample,
    HeadKind,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    Split,
    TaggingExample,
    Task,
    TaskDataError,
    TextExample,
)

Feature = dict[str, Any]


def _pad(seqs: list[list[int]], value: int) -> Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def _encode_text(tokenizer, text: str, text_b: str | None, max_length: int) -> list[int]:
    enc = tokenizer(text, text_b, truncation=True, max_length=max_length)
    return list(enc["input_ids"])


def last_token(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Hidden state of the last non-pad token of each row (right padding)."""
    last = attention_mask.long().sum(-1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean of the hidden states where `mask` is 1 (rows with an empty mask pool to zero)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _rows(features: Sequence[Feature],
          logits: Sequence[Tensor]) -> Iterator[tuple[Feature, Tensor]]:
    """Pair each feature with its logits row: batches are in feature order."""
    it = iter(features)
    n = 0
    for batch in logits:
        for row in batch:
            f = next(it, None)
            if f is None:
                raise ValueError(f"more logits rows than features ({len(features)})")
            n += 1
            yield f, row
    if n != len(features):
        raise ValueError(f"{n} logits rows for {len(features)} features: the engine must "
                         "pass the logits of every feature, in feature order")


def _special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single sequence (e.g. [BOS])."""
    probe = "hello"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


def _registered(name: str) -> Task | None:
    from raysweep.tasks import registry

    try:
        return registry.get_task(name)
    except KeyError:
        return None


def label_names_for(split: Split, label_names: Sequence[str] | None = None) -> tuple[str, ...]:
    """The tag inventory of a tagging split: the argument, else the split's own (loaders that
    read it from the data set it, e.g. CCG's tags_to_id.json), else the registered task's."""
    if label_names:
        return tuple(label_names)
    own = getattr(split, "label_names", ())
    if own:
        return tuple(own)
    task = _registered(split.task)
    if task is not None and task.label_names:
        return tuple(task.label_names)
    raise TaskDataError(f"task {split.task!r}, split {split.split!r}: no label names for the "
                        "tags (field 'label_names' of the task or split)")


def _expect(ex: Any, cls: type, split: Split) -> None:
    if not isinstance(ex, cls):
        raise TypeError(f"task {split.task!r}, split {split.split!r}: the head expects "
                        f"{cls.__name__}, got {type(ex).__name__}")


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

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        raise NotImplementedError

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        ids = [f["input_ids"] for f in features]
        batch = {
            "input_ids": _pad(ids, pad_id),
            "attention_mask": _pad([[1] * len(s) for s in ids], 0),
            "example_index": torch.tensor([f["example_index"] for f in features]),
        }
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor]) -> list[Any]:
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

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        out = []
        for i, ex in enumerate(split.examples):
            assert isinstance(ex, PairExample), type(ex)
            ids = _encode_text(tokenizer, ex.text_a, ex.text_b, max_length)
            out.append({"input_ids": ids, "label": ex.label, "example_index": i})
        return out

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor]) -> list[int]:
        return torch.cat(logits).argmax(-1).tolist()


class MultipleChoiceHead(Head):
    """Context + each choice -> one score per choice (last non-pad token); softmax over choices.

    Batches are B x C x T (`TaskModel.forward` flattens them for the backbone and reshapes the
    per-row scores back to B x C). Examples with fewer choices than the widest in a batch get
    padded choices, masked out by `choice_mask` (B x C)."""

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

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        out = []
        for i, ex in enumerate(split.examples):
            _expect(ex, ChoiceExample, split)
            if not ex.choices:
                raise TaskDataError(f"task {split.task!r}, split {split.split!r}: example "
                                    f"{ex.id!r} has no choices (field 'choices')")
            ids = [_encode_text(tokenizer, ex.context, choice, max_length)
                   for choice in ex.choices]
            out.append({"input_ids": ids, "label": ex.label, "example_index": i})
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        n_choices = max(len(f["input_ids"]) for f in features)
        width = max(len(s) for f in features for s in f["input_ids"])
        ids, mask, choice_mask = [], [], []
        for f in features:
            rows, rmask, cmask = [], [], []
            for c in range(n_choices):
                # A padded choice is one pad token with a live mask: never an all-masked row.
                seq = f["input_ids"][c] if c < len(f["input_ids"]) else [pad_id]
                rows.append(seq + [pad_id] * (width - len(seq)))
                rmask.append([1] * len(seq) + [0] * (width - len(seq)))
                cmask.append(int(c < len(f["input_ids"])))
            ids.append(rows)
            mask.append(rmask)
            choice_mask.append(cmask)
        batch = {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "choice_mask": torch.tensor(choice_mask, dtype=torch.long),
            "example_index": torch.tensor([f["example_index"] for f in features]),
        }
        if "label" in features[0]:
            batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor]) -> list[int]:
        preds: list[int | None] = [None] * len(split.examples)
        for f, row in _rows(features, logits):
            preds[f["example_index"]] = int(row[: len(f["input_ids"])].argmax())
        return [p if p is not None else 0 for p in preds]


class TokenClassificationHead(Head):
    """Words -> one tag per word, read at the first sub-token of each word.

    Words are tokenized one by one (as XTREME's tagging code does), so any tokenizer works; a word
    that tokenizes to nothing is replaced by the unknown token. A sentence longer than
    `max_length` is split into several features (windows of whole words), as XTREME splits long
    sentences; `predict` stitches the words back together. Feature keys: `input_ids`, `labels`
    (per token: the tag id at first sub-tokens, -100 elsewhere), `word_ids` (per token: the word's
    index at first sub-tokens, -1 elsewhere), `example_index`."""

    kind = "token_cls"

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        self.classifier = nn.Linear(hidden_size, task.num_labels)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return self.classifier(hidden)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(),
                               ignore_index=-100)

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int,
               label_names: Sequence[str] | None = None) -> list[Feature]:
        names = label_names_for(split, label_names)
        tag_id = {t: i for i, t in enumerate(names)}
        prefix, suffix = _special_affixes(tokenizer)
        budget = max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise ValueError(f"max_length {max_length} leaves no room for words")
        fallback = next((t for t in (tokenizer.unk_token_id, tokenizer.eos_token_id,
                                     tokenizer.pad_token_id) if t is not None), 0)
        out: list[Feature] = []
        for i, ex in enumerate(split.examples):
            _expect(ex, TaggingExample, split)
            if len(ex.tags) != len(ex.words):
                raise TaskDataError(f"task {split.task!r}, split {split.split!r}: example "
                                    f"{ex.id!r} has {len(ex.words)} words but {len(ex.tags)} "
                                    "tags (field 'tags')")
            pieces = (tokenizer(list(ex.words), add_special_tokens=False)["input_ids"]
                      if ex.words else [])
            ids: list[int] = []
            labels: list[int] = []
            word_ids: list[int] = []

            def flush() -> None:
                out.append({"input_ids": prefix + ids + suffix,
                            "labels": [-100] * len(prefix) + labels + [-100] * len(suffix),
                            "word_ids": [-1] * len(prefix) + word_ids + [-1] * len(suffix),
                            "example_index": i})

            for w, (tag, piece) in enumerate(zip(ex.tags, pieces)):
                piece = list(piece)[:budget] or [fallback]
                if tag not in tag_id:
                    raise TaskDataError(
                        f"task {split.task!r}, split {split.split!r}: tag {tag!r} of example "
                        f"{ex.id!r} (field 'tags') is not in the label set {list(names)[:20]}")
                if ids and len(ids) + len(piece) > budget:
                    flush()
                    ids, labels, word_ids = [], [], []
                ids += piece
                labels += [tag_id[tag]] + [-100] * (len(piece) - 1)
                word_ids += [w] + [-1] * (len(piece) - 1)
            flush()
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        batch = super().collate(features, pad_id)
        if "labels" in features[0]:  # per-token labels, -100 where no word starts
            batch["labels"] = _pad([f["labels"] for f in features], -100)
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor],
                label_names: Sequence[str] | None = None) -> list[tuple[str, ...]]:
        names = label_names_for(split, label_names)
        default = "O" if "O" in names else names[0]
        preds: list[list[str]] = [[default] * len(ex.words) for ex in split.examples]
        for f, row in _rows(features, logits):
            tag_ids = row[: len(f["word_ids"]), : len(names)].argmax(-1).tolist()
            words = preds[f["example_index"]]
            for pos, w in enumerate(f["word_ids"]):
                if w >= 0:
                    words[w] = names[tag_ids[pos]]
        return [tuple(p) for p in preds]


class SpanQAHead(Head):
    """Extractive QA: start/end logits over the tokens of `question + context`.

    Long contexts are split into overlapping windows (`doc_stride` tokens of overlap, as in
    transformers' `run_qa.py`), each a feature with `offsets` (per token: the (start, end)
    character span in the context, or None outside the context) and, for training,
    `start_position`/`end_position` (0, the BOS position, when the answer is not inside the
    window or the question has none). `predict` decodes the n-best spans over all windows of an
    example; for SQuAD v2-style tasks (metric `squad_v2`) it answers "" when the null score
    (start+end logit at position 0) beats the best span. Needs a fast (Rust) tokenizer, for the
    offsets."""

    kind = "span_qa"
    doc_stride: ClassVar[int] = 128
    max_query_length: ClassVar[int] = 64
    n_best: ClassVar[int] = 20
    max_answer_length: ClassVar[int] = 30

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None):
        super().__init__(hidden_size, task)
        self.qa_outputs = nn.Linear(hidden_size, 2)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        return self.qa_outputs(hidden)  # B x T x 2

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        start, end = logits.float().unbind(-1)
        return (F.cross_entropy(start, batch["start_positions"])
                + F.cross_entropy(end, batch["end_positions"])) / 2

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int, doc_stride: int | None = None,
               max_query_length: int | None = None) -> list[Feature]:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError("the span QA head needs a fast tokenizer (character offsets)")
        doc_stride = cls.doc_stride if doc_stride is None else doc_stride
        max_query_length = cls.max_query_length if max_query_length is None else max_query_length
        n_special = len(tokenizer("a", "b")["input_ids"]) - len(
            tokenizer("a", add_special_tokens=False)["input_ids"]) - len(
            tokenizer("b", add_special_tokens=False)["input_ids"])
        out: list[Feature] = []
        for i, ex in enumerate(split.examples):
            _expect(ex, SpanQAExample, split)
            question = ex.question.lstrip()
            q = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
            if len(q["input_ids"]) > max_query_length:  # cut the question text, as SQuAD does
                question = question[: q["offset_mapping"][max_query_length - 1][1]]
                q_len = max_query_length
            else:
                q_len = len(q["input_ids"])
            room = max_length - q_len - n_special
            if room < 2:
                raise ValueError(f"max_length {max_length} leaves no room for the context")
            stride = max(0, min(doc_stride, room // 2))
            enc = tokenizer(question, ex.context, truncation="only_second", max_length=max_length,
                            stride=stride, return_overflowing_tokens=True,
                            return_offsets_mapping=True)
            answer = ex.answers[0] if ex.answers else None
            for w in range(len(enc["input_ids"])):
                seq_ids = enc.sequence_ids(w)
                offsets = [tuple(o) if s == 1 else None
                           for o, s in zip(enc["offset_mapping"][w], seq_ids)]
                start_pos = end_pos = 0
                if answer is not None:
                    a_start, a_end = answer.start, answer.start + len(answer.text)
                    ctx = [k for k, o in enumerate(offsets) if o is not None]
                    if ctx and offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:
                        start_pos = next(k for k in ctx if offsets[k][1] > a_start)
                        end_pos = next((k for k in reversed(ctx) if offsets[k][0] < a_end),
                                       start_pos)
                        end_pos = max(end_pos, start_pos)
                out.append({"input_ids": list(enc["input_ids"][w]), "offsets": offsets,
                            "start_position": start_pos, "end_position": end_pos,
                            "example_index": i})
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        batch = Head.collate(features, pad_id)
        if "start_position" in features[0]:
            batch["start_positions"] = torch.tensor([f["start_position"] for f in features])
            batch["end_positions"] = torch.tensor([f["end_position"] for f in features])
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor],
                n_best: int | None = None, max_answer_length: int | None = None,
                allow_null: bool | None = None) -> list[str]:
        n_best = cls.n_best if n_best is None else n_best
        if max_answer_length is None:
            max_answer_length = cls.max_answer_length
        if allow_null is None:
            task = _registered(split.task)
            allow_null = task is not None and task.metric == "squad_v2"
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for f, row in _rows(features, logits):
            i = f["example_index"]
            context = split.examples[i].context
            n = len(f["input_ids"])
            start, end = row[:n, 0].float(), row[:n, 1].float()
            null_score = float(start[0] + end[0])
            null[i] = min(null.get(i, math.inf), null_score)
            offsets = f["offsets"]
            k = min(n_best, n)
            starts = start.topk(k).indices.tolist()
            ends = end.topk(k).indices.tolist()
            for s in starts:
                if offsets[s] is None:
                    continue
                for e in ends:
                    if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = float(start[s] + end[e])
                    if i not in best or score > best[i][0]:
                        best[i] = (score, context[offsets[s][0]: offsets[e][1]].strip())
        preds = []
        for i in range(len(split.examples)):
            if i not in best or (allow_null and null.get(i, -math.inf) > best[i][0]):
                preds.append("")
            else:
                preds.append(best[i][1])
        return preds


class Ranking(tuple):
    """Ranked candidate ids (best first) with their scores in `.scores` (cosine similarity)."""

    scores: tuple[float, ...]

    def __new__(cls, ids: Sequence[str] = (), scores: Sequence[float] = ()):
        self = super().__new__(cls, ids)
        self.scores = tuple(scores)
        return self

    def __reduce__(self):
        return (Ranking, (tuple(self), self.scores))


class RetrievalHead(Head):
    """Sentence embeddings: mean-pooled hidden states of layer `self.layer`; no parameters, no
    training (XTREME's zero-shot retrieval setting).

    `encode` emits the split's queries (`side: "query"`, `example_index`) and then its candidate
    pool (`side: "candidate"`, `candidate_index` into `split.candidates`, `example_index` -1).
    `pool_mask` marks the non-special tokens that are averaged (BOS, a LLaMA attention sink, is
    left out). `predict` ranks the pool for each query by cosine similarity and returns a
    `Ranking` of the top `top_k` candidate ids. The layer is set by the engine:
    `model.heads[task].layer = k` (an index into LlamaModel's hidden_states; None = the final
    normed output)."""

    kind = "retrieval"
    top_k: ClassVar[int] = 100

    def __init__(self, hidden_size: int, task: Task, vocab_size: int | None = None,
                 layer: int | None = None):
        super().__init__(hidden_size, task)
        self.layer = layer

    def forward(self, hidden: Tensor, batch: dict[str, Tensor]) -> Tensor:
        mask = batch.get("pool_mask", batch["attention_mask"])
        empty = mask.sum(-1, keepdim=True) == 0
        mask = torch.where(empty, batch["attention_mask"], mask)
        return mean_pool(hidden.float(), mask)

    def loss(self, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError("the retrieval head is not trained (zero-shot retrieval)")

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        def one(text: str) -> tuple[list[int], list[int]]:
            enc = tokenizer(text, truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            return list(enc["input_ids"]), [1 - s for s in enc["special_tokens_mask"]]

        out: list[Feature] = []
        for i, ex in enumerate(split.examples):
            _expect(ex, RetrievalExample, split)
            ids, pool = one(ex.query)
            out.append({"input_ids": ids, "pool_mask": pool, "side": "query",
                        "example_index": i})
        for j, cand in enumerate(split.candidates):
            ids, pool = one(cand.text)
            out.append({"input_ids": ids, "pool_mask": pool, "side": "candidate",
                        "candidate_index": j, "example_index": -1})
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        batch = Head.collate(features, pad_id)
        batch["pool_mask"] = _pad([f["pool_mask"] for f in features], 0)
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor],
                top_k: int | None = None) -> list[Ranking]:
        top_k = cls.top_k if top_k is None else top_k
        queries: dict[int, Tensor] = {}
        cands: dict[int, Tensor] = {}
        for f, row in _rows(features, logits):
            if f["side"] == "query":
                queries[f["example_index"]] = row.float()
            else:
                cands[f["candidate_index"]] = row.float()
        if len(cands) != len(split.candidates) or len(queries) != len(split.examples):
            raise ValueError(f"task {split.task!r}: retrieval needs the embeddings of every "
                             "query and every candidate")
        if not split.candidates:
            return [Ranking() for _ in split.examples]
        ids = [c.id for c in split.candidates]
        cmat = F.normalize(torch.stack([cands[j] for j in range(len(ids))]), dim=-1)
        qmat = F.normalize(torch.stack([queries[i] for i in range(len(split.examples))]), dim=-1)
        k = min(top_k, len(ids))
        out: list[Ranking] = []
        for chunk in qmat.split(1024):
            values, index = (chunk @ cmat.T).topk(k, dim=-1)
            for vals, idx in zip(values.tolist(), index.tolist()):
                out.append(Ranking([ids[j] for j in idx], vals))
        return out


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

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        out = []
        for i, ex in enumerate(split.examples):
            assert isinstance(ex, TextExample), type(ex)
            out.append({"input_ids": _encode_text(tokenizer, ex.text, None, max_length),
                        "example_index": i})
        return out

    @classmethod
    def predict(cls, split: Split, features: list[Feature],
                logits: list[Tensor]) -> list[tuple[float, int]]:
        """Per example: (summed next-token NLL, number of predicted tokens); metric `perplexity`."""
        sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
        for f, row in _rows(features, logits):
            ids = torch.tensor(f["input_ids"], device=row.device)
            n = len(ids) - 1
            if n <= 0:
                continue
            nll = F.cross_entropy(row[:n].float(), ids[1:], reduction="sum")
            acc = sums[f["example_index"]]
            acc[0] += float(nll)
            acc[1] += n
        return [(sums[i][0], int(sums[i][1])) if i in sums else (0.0, 0)
                for i in range(len(split.examples))]


HEADS: dict[str, type[Head]] = {
    cls.kind: cls
    for cls in (SequenceClassificationHead, MultipleChoiceHead, TokenClassificationHead,
                SpanQAHead, RetrievalHead, CausalLMHead)
}


def head_for(task: Task) -> type[Head]:
    return HEADS[task.head]
