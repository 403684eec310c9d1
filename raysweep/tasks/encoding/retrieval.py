"""The retrieval encoder (XTREME's zero-shot sentence retrieval): queries and a candidate pool,
ranked by the cosine of their pooled embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from raysweep.tasks.base import RetrievalExample, Split
from raysweep.tasks.encoding.base import Encoder, Feature, checked, pad, rows


class Ranking(tuple):
    """Ranked candidate ids (best first) with their scores in `.scores` (cosine similarity)."""

    scores: tuple[float, ...]

    def __new__(cls, ids: Sequence[str] = (), scores: Sequence[float] = ()):
        self = super().__new__(cls, ids)
        self.scores = tuple(scores)
        return self

    def __reduce__(self):
        return (Ranking, (tuple(self), self.scores))


class RetrievalEncoder(Encoder):
    """`encode` emits the split's queries (`side: "query"`, `example_index`) and then its
    candidate pool (`side: "candidate"`, `candidate_index` into `split.candidates`,
    `example_index` -1). `pool_mask` marks the non-special tokens that are averaged (BOS, a LLaMA
    attention sink, is left out). `predict` ranks the pool for each query by cosine similarity and
    returns a `Ranking` of the top `top_k` candidate ids."""

    kind = "retrieval"
    top_k: ClassVar[int] = 100

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        def one(text: str) -> tuple[list[int], list[int]]:
            enc = tokenizer(text, truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            return list(enc["input_ids"]), [1 - s for s in enc["special_tokens_mask"]]

        out: list[Feature] = []
        for i, ex in checked(split, RetrievalExample):
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
        batch = Encoder.collate(features, pad_id)
        batch["pool_mask"] = pad([f["pool_mask"] for f in features], 0)
        return batch

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor],
                top_k: int | None = None) -> list[Ranking]:
        top_k = cls.top_k if top_k is None else top_k
        queries: dict[int, Tensor] = {}
        cands: dict[int, Tensor] = {}
        for f, row in rows(features, logits):
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
