"""Encoders whose examples are whole sequences: sequence classification, multiple choice and the
causal-LM objective."""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch import Tensor

from raysweep.tasks.base import (
    ChoiceExample,
    PairExample,
    Split,
    TaskDataError,
    TextExample,
)
from raysweep.tasks.encoding.base import (
    Encoder,
    Feature,
    checked,
    encode_text,
    rows,
    with_index_and_labels,
)


class SequenceClassificationEncoder(Encoder):
    """Single sentence or sentence pair -> a label id (the head scores the last non-pad token)."""

    kind = "seq_cls"

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        return [{"input_ids": encode_text(tokenizer, ex.text_a, ex.text_b, max_length),
                 "label": ex.label, "example_index": i} for i, ex in checked(split, PairExample)]

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor]) -> list[int]:
        return torch.cat(logits).argmax(-1).tolist()


class MultipleChoiceEncoder(Encoder):
    """Context + each choice -> the index of the best-scoring choice.

    Batches are B x C x T. Examples with fewer choices than the widest in a batch get padded
    choices, marked 0 in `choice_mask` (B x C), which the head masks out."""

    kind = "multiple_choice"

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        out = []
        for i, ex in checked(split, ChoiceExample):
            if not ex.choices:
                raise TaskDataError(f"task {split.task!r}, split {split.split!r}: example "
                                    f"{ex.id!r} has no choices (field 'choices')")
            ids = [encode_text(tokenizer, ex.context, choice, max_length)
                   for choice in ex.choices]
            out.append({"input_ids": ids, "label": ex.label, "example_index": i})
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        n_choices = max(len(f["input_ids"]) for f in features)
        width = max(len(s) for f in features for s in f["input_ids"])
        ids, mask, choice_mask = [], [], []
        for f in features:
            seqs, rmask, cmask = [], [], []
            for c in range(n_choices):
                # A padded choice is one pad token with a live mask: never an all-masked row.
                seq = f["input_ids"][c] if c < len(f["input_ids"]) else [pad_id]
                seqs.append(seq + [pad_id] * (width - len(seq)))
                rmask.append([1] * len(seq) + [0] * (width - len(seq)))
                cmask.append(int(c < len(f["input_ids"])))
            ids.append(seqs)
            mask.append(rmask)
            choice_mask.append(cmask)
        return with_index_and_labels({
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
            "choice_mask": torch.tensor(choice_mask, dtype=torch.long),
        }, features)

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor]) -> list[int]:
        preds: list[int | None] = [None] * len(split.examples)
        for f, row in rows(features, logits):
            preds[f["example_index"]] = int(row[: len(f["input_ids"])].argmax())
        return [p if p is not None else 0 for p in preds]


class CausalLMEncoder(Encoder):
    """Plain text for next-token prediction; predictions are (summed NLL, number of predicted
    tokens) per example, for the `perplexity` metric."""

    kind = "causal_lm"

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        return [{"input_ids": encode_text(tokenizer, ex.text, None, max_length),
                 "example_index": i} for i, ex in checked(split, TextExample)]

    @classmethod
    def predict(cls, split: Split, features: list[Feature],
                logits: list[Tensor]) -> list[tuple[float, int]]:
        sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0])
        for f, row in rows(features, logits):
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
