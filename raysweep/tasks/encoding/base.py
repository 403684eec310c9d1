"""The encoder interface and what every kind's encoder shares: padding, pairing logits rows with
features, special-token affixes, the tag inventory of a split."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from raysweep.tasks.base import HeadKind, Split, Task, TaskDataError

Feature = dict[str, Any]


class Encoder:
    """The data side of one head kind, as classmethods (no state):

    - `encode(split, tokenizer, max_length)`: canonical examples -> a list of feature dicts
      (lists of ints; every feature carries `example_index`, its example's position in the split);
    - `collate(features, pad_id)`: features -> a batch of tensors (right padding);
    - `predict(split, features, logits)`: all logits of a split -> one prediction per example, in
      the form the task's metric takes.
    """

    kind: ClassVar[HeadKind]

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        raise NotImplementedError

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        ids = [f["input_ids"] for f in features]
        return with_index_and_labels(
            {"input_ids": pad(ids, pad_id), "attention_mask": pad([[1] * len(s) for s in ids], 0)},
            features)

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor]) -> list[Any]:
        raise NotImplementedError


def with_index_and_labels(batch: dict[str, Tensor], features: list[Feature]) -> dict[str, Tensor]:
    """Adds what every batch carries: `example_index`, and `labels` where features have one."""
    batch["example_index"] = torch.tensor([f["example_index"] for f in features])
    if "label" in features[0]:
        batch["labels"] = torch.tensor([f["label"] for f in features], dtype=torch.long)
    return batch


def pad(seqs: list[list[int]], value: int) -> Tensor:
    width = max(len(s) for s in seqs)
    return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)


def encode_text(tokenizer, text: str, text_b: str | None, max_length: int) -> list[int]:
    enc = tokenizer(text, text_b, truncation=True, max_length=max_length)
    return list(enc["input_ids"])


def rows(features: Sequence[Feature],
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


def special_affixes(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after a single sequence (e.g. [BOS])."""
    probe = "hello"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe)["input_ids"])
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


def registered(name: str) -> Task | None:
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
    task = registered(split.task)
    if task is not None and task.label_names:
        return tuple(task.label_names)
    raise TaskDataError(f"task {split.task!r}, split {split.split!r}: no label names for the "
                        "tags (field 'label_names' of the task or split)")


def checked(split: Split, cls: type) -> Iterator[tuple[int, Any]]:
    """(index, example) over the split's examples, each checked to be a `cls`."""
    for i, ex in enumerate(split.examples):
        if not isinstance(ex, cls):
            raise TypeError(f"task {split.task!r}, split {split.split!r}: the head expects "
                            f"{cls.__name__}, got {type(ex).__name__}")
        yield i, ex
