"""The token-classification encoder: words -> one tag per word, read at the first sub-token of
each word."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from raysweep.tasks.base import Split, TaggingExample, TaskDataError
from raysweep.tasks.encoding.base import (
    Encoder,
    Feature,
    checked,
    label_names_for,
    pad,
    rows,
    special_affixes,
)


class TokenClassificationEncoder(Encoder):
    """Words are tokenized one by one (as XTREME's tagging code does), so any tokenizer works; a
    word that tokenizes to nothing is replaced by the unknown token. A sentence longer than
    `max_length` is split into several features (windows of whole words), as XTREME splits long
    sentences; `predict` stitches the words back together. Feature keys: `input_ids`, `labels`
    (per token: the tag id at first sub-tokens, -100 elsewhere), `word_ids` (per token: the word's
    index at first sub-tokens, -1 elsewhere), `example_index`. Predictions: a tuple of tag
    strings per example, one per word."""

    kind = "token_cls"

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int,
               label_names: Sequence[str] | None = None) -> list[Feature]:
        names = label_names_for(split, label_names)
        tag_id = {t: i for i, t in enumerate(names)}
        prefix, suffix = special_affixes(tokenizer)
        budget = max_length - len(prefix) - len(suffix)
        if budget < 1:
            raise ValueError(f"max_length {max_length} leaves no room for words")
        fallback = next((t for t in (tokenizer.unk_token_id, tokenizer.eos_token_id,
                                     tokenizer.pad_token_id) if t is not None), 0)

        def feature(i: int, ids: list[int], labels: list[int], word_ids: list[int]) -> Feature:
            return {"input_ids": prefix + ids + suffix,
                    "labels": [-100] * len(prefix) + labels + [-100] * len(suffix),
                    "word_ids": [-1] * len(prefix) + word_ids + [-1] * len(suffix),
                    "example_index": i}

        out: list[Feature] = []
        for i, ex in checked(split, TaggingExample):
            if len(ex.tags) != len(ex.words):
                raise TaskDataError(f"task {split.task!r}, split {split.split!r}: example "
                                    f"{ex.id!r} has {len(ex.words)} words but {len(ex.tags)} "
                                    "tags (field 'tags')")
            pieces = (tokenizer(list(ex.words), add_special_tokens=False)["input_ids"]
                      if ex.words else [])
            ids: list[int] = []
            labels: list[int] = []
            word_ids: list[int] = []
            for w, (tag, piece) in enumerate(zip(ex.tags, pieces)):
                piece = list(piece)[:budget] or [fallback]
                if tag not in tag_id:
                    raise TaskDataError(
                        f"task {split.task!r}, split {split.split!r}: tag {tag!r} of example "
                        f"{ex.id!r} (field 'tags') is not in the label set {list(names)[:20]}")
                if ids and len(ids) + len(piece) > budget:  # this word starts a new window
                    out.append(feature(i, ids, labels, word_ids))
                    ids, labels, word_ids = [], [], []
                ids += piece
                labels += [tag_id[tag]] + [-100] * (len(piece) - 1)
                word_ids += [w] + [-1] * (len(piece) - 1)
            out.append(feature(i, ids, labels, word_ids))
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        batch = super().collate(features, pad_id)
        if "labels" in features[0]:  # per-token labels, -100 where no word starts
            batch["labels"] = pad([f["labels"] for f in features], -100)
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor],
                label_names: Sequence[str] | None = None) -> list[tuple[str, ...]]:
        names = label_names_for(split, label_names)
        default = "O" if "O" in names else names[0]
        preds: list[list[str]] = [[default] * len(ex.words) for ex in split.examples]
        for f, row in rows(features, logits):
            tag_ids = row[: len(f["word_ids"]), : len(names)].argmax(-1).tolist()
            words = preds[f["example_index"]]
            for pos, w in enumerate(f["word_ids"]):
                if w >= 0:
                    words[w] = names[tag_ids[pos]]
        return [tuple(p) for p in preds]
