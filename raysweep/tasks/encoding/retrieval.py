"""The retrieval encoder: queries and a candidate pool, ranked by the cosine of their pooled
embeddings (XTREME's sentence retrieval); BUCC mined by margin scores (`mining`); and, for
fine-tuning, (query, positive) pairs for the head's in-batch contrastive loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from raysweep.tasks.base import RetrievalExample, Split, TaskDataError
from raysweep.tasks.encoding.base import Encoder, Feature, checked, pad, registered, rows
from raysweep.tasks.encoding.mining import mine_ids
from raysweep.tasks.retrieval_data import as_retrieval, dev_sentences, pool


class Ranking(tuple):
    """Ranked candidate ids (best first) with their scores in `.scores` (cosine similarity;
    for BUCC the margin score of the one mined pair)."""

    scores: tuple[float, ...]

    def __new__(cls, ids: Sequence[str] = (), scores: Sequence[float] = ()):
        self = super().__new__(cls, ids)
        self.scores = tuple(scores)
        return self

    def __reduce__(self):
        return (Ranking, (tuple(self), self.scores))


class Mined(list):
    """BUCC predictions: per example a `Ranking` of its mined English sentence (empty when none
    was mined), and in `dev` the mined (source id, target id) -> score of the dev sentences the
    split carries (None when it carries none), from which `bucc_f1` picks the threshold."""

    dev: dict[tuple[str, str], float] | None = None


def mines(split: Split) -> bool:
    """BUCC-style splits (metric `bucc_f1`) are mined, not ranked."""
    task = registered(split.task)
    return task is not None and task.metric == "bucc_f1"


class RetrievalEncoder(Encoder):
    """`encode` emits the split's queries (`side: "query"`, `example_index`) and then its
    candidates (`side: "candidate"`, `candidate_index` into `split.candidates`, `example_index`
    -1). `pool_mask` marks the non-special tokens that are averaged (BOS, a LLaMA attention sink,
    is left out). `predict` ranks the pool for each query by cosine similarity and returns a
    `Ranking` of the top `top_k` candidate ids; a BUCC split is mined instead (`Mined`).

    A train split becomes one feature per query (`side: "pair"`): the query and the text of its
    first relevant candidate, collated B x 2 x T for the head's in-batch loss (XTREME-R's
    `BertForRetrieval`). A SQuAD split (LAReQA's training source and dev) is first turned into
    retrieval (`retrieval_data.as_retrieval`)."""

    kind = "retrieval"
    top_k: ClassVar[int] = 100

    @classmethod
    def encode(cls, split: Split, tokenizer, max_length: int) -> list[Feature]:
        def one(text: str) -> tuple[list[int], list[int]]:
            enc = tokenizer(text, truncation=True, max_length=max_length,
                            return_special_tokens_mask=True)
            return list(enc["input_ids"]), [1 - s for s in enc["special_tokens_mask"]]

        split = as_retrieval(split)
        if split.split == "train":
            return cls._pairs(split, one)
        out: list[Feature] = []
        for i, ex in checked(split, RetrievalExample):
            ids, mask = one(ex.query)
            out.append({"input_ids": ids, "pool_mask": mask, "side": "query",
                        "example_index": i})
        for j, cand in enumerate(split.candidates):
            ids, mask = one(cand.text)
            out.append({"input_ids": ids, "pool_mask": mask, "side": "candidate",
                        "candidate_index": j, "example_index": -1})
        return out

    @classmethod
    def _pairs(cls, split: Split, one) -> list[Feature]:
        text = {c.id: c.text for c in split.candidates}
        out: list[Feature] = []
        for i, ex in checked(split, RetrievalExample):
            if not ex.relevant or ex.relevant[0] not in text:
                raise TaskDataError(f"task {split.task!r}, split {split.split!r}: example "
                                    f"{ex.id!r} has no relevant candidate in the pool "
                                    "(field 'relevant')")
            (q, qm), (a, am) = one(ex.query), one(text[ex.relevant[0]])
            out.append({"input_ids": [q, a], "pool_mask": [qm, am], "side": "pair",
                        "example_index": i})
        return out

    @classmethod
    def collate(cls, features: list[Feature], pad_id: int) -> dict[str, Tensor]:
        if features[0]["side"] != "pair":
            batch = Encoder.collate(features, pad_id)
            batch["pool_mask"] = pad([f["pool_mask"] for f in features], 0)
            return batch
        # B x 2 x T: TaskModel runs the backbone on the 2B rows and hands the head B x 2 x H
        seqs = [s for f in features for s in f["input_ids"]]
        width = max(len(s) for s in seqs)

        def grid(key: str, fill: int) -> Tensor:
            rows_ = [s + [fill] * (width - len(s)) for f in features for s in f[key]]
            return torch.tensor(rows_, dtype=torch.long).view(len(features), 2, width)

        mask = [[1] * len(s) for s in seqs]
        return {"input_ids": grid("input_ids", pad_id),
                "attention_mask": torch.tensor([m + [0] * (width - len(m)) for m in mask],
                                               dtype=torch.long).view(len(features), 2, width),
                "pool_mask": grid("pool_mask", 0),
                "example_index": torch.tensor([f["example_index"] for f in features])}

    @classmethod
    def predict(cls, split: Split, features: list[Feature], logits: list[Tensor],
                top_k: int | None = None) -> list[Ranking]:
        top_k = cls.top_k if top_k is None else top_k
        split = as_retrieval(split)
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
        if mines(split):
            return _mine(split, queries, cands)
        ids = [c.id for c in split.candidates]
        if not ids or not split.examples:
            return [Ranking() for _ in split.examples]
        cmat = F.normalize(torch.stack([cands[j] for j in range(len(ids))]), dim=-1)
        qmat = F.normalize(torch.stack([queries[i] for i in range(len(split.examples))]), dim=-1)
        k = min(top_k, len(ids))
        out: list[Ranking] = []
        for chunk in qmat.split(1024):
            values, index = (chunk @ cmat.T).topk(k, dim=-1)
            for vals, idx in zip(values.tolist(), index.tolist()):
                out.append(Ranking([ids[j] for j in idx], vals))
        return out


def _mine(split: Split, queries: dict[int, Tensor], cands: dict[int, Tensor]) -> Mined:
    """Margin mining of the split's sources against its pool, and of the dev sentences it
    carries against each other."""
    where = {id(c): j for j, c in enumerate(split.candidates)}

    def side(sents: Sequence) -> tuple[list[tuple[str, str]], Tensor]:
        emb = [cands[where[id(c)]] for c in sents]
        return [(c.id, c.text) for c in sents], _stack(emb)

    sources = [(ex.id, ex.query) for ex in split.examples]
    scores = mine_ids(sources, _stack([queries[i] for i in range(len(sources))]),
                      *side(pool(split)))
    best = {s: (t, v) for (s, t), v in scores.items()}  # a source is mined at most once
    out = Mined(Ranking([best[ex.id][0]], [best[ex.id][1]]) if ex.id in best else Ranking()
                for ex in split.examples)
    dev_src, dev_trg = dev_sentences(split)
    if dev_src:
        out.dev = mine_ids(*side(dev_src), *side(dev_trg))
    return out


def _stack(rows_: list[Tensor]) -> Tensor:
    return torch.stack(rows_) if rows_ else torch.zeros(0, 1)
