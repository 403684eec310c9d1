"""The extractive-QA encoder, after transformers' `run_qa.py`: question then context, the context
windowed with a document stride, n-best span decoding over all windows of an example; position 0
(the BOS token) is the "no answer" position."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from raysweep.tasks.base import SpanQAExample, Split
from raysweep.tasks.encoding.base import Encoder, Feature, checked, registered, rows


class SpanQAEncoder(Encoder):
    """Long contexts are split into overlapping windows (`doc_stride` tokens of overlap), each a
    feature with `offsets` (per token: the (start, end) character span in the context, or None
    outside the context) and, for training, `start_position`/`end_position` (0, the BOS position,
    when the answer is not inside the window or the question has none). `predict` decodes the
    n-best spans over all windows of an example into the answer text; for SQuAD v2-style tasks
    (metric `squad_v2`) it answers "" when the null score (start+end logit at position 0) beats
    the best span. Needs a fast (Rust) tokenizer, for the offsets."""

    kind = "span_qa"
    doc_stride: ClassVar[int] = 128
    max_query_length: ClassVar[int] = 64
    n_best: ClassVar[int] = 20
    max_answer_length: ClassVar[int] = 30

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
        for i, ex in checked(split, SpanQAExample):
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
        batch = Encoder.collate(features, pad_id)
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
            task = registered(split.task)
            allow_null = task is not None and task.metric == "squad_v2"
        best: dict[int, tuple[float, str]] = {}
        null: dict[int, float] = {}
        for f, row in rows(features, logits):
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
