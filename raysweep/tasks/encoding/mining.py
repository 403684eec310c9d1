"""Bitext mining with ratio-margin scores, as XTREME scores BUCC 2018: a transcription of
`mine_bitext` (mode 'mine', retrieval 'max', margin 'ratio', dist 'cosine', neighbourhood 4, no
shifted embeddings) and of the sentence-to-id step of `read_candidate2score` / `read_sent2id`,
all in google-research/xtreme `third_party/utils_retrieve.py` (itself LASER's `mine_bitexts`).

- Duplicate sentences are unified first (`text_load_unify`): one node per distinct text.
- Each side's k nearest neighbours on the other side (k = min(4, size of that side)) give the
  mean similarities `x2y_mean` and `y2x_mean`; a pair (i, j) scores
  cos(x_i, y_j) / ((x2y_mean_i + y2x_mean_j) / 2), among i's k neighbours (forward) and j's
  (backward).
- Every source's best forward pair and every target's best backward pair are candidates; in
  descending score, a candidate is kept when neither of its sentences is taken yet, and written
  out when its score is > 0 (the official `threshold = 0`).
- A mined pair gets ids only if both its sentences occur once in their file (`read_sent2id` drops
  repeated sentences); a pair mined twice keeps its higher score.

Where numpy leaves an order unspecified (`np.argsort(-scores)` on equal scores), candidates are
taken in a fixed order: forward before backward, then by index. A score that is NaN (a zero
denominator) is never written out, as `nan > 0` is false in the original.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F
from torch import Tensor

NEIGHBOURHOOD = 4
_BLOCK = 1 << 24  # similarity entries per chunk of the exhaustive search


def knn(x: Tensor, y: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k largest inner products of each row of `x` with the rows of `y`, and their indices
    (faiss `IndexFlatIP` search, exhaustive), in chunks of rows of `x`."""
    rows = max(1, _BLOCK // max(len(y), 1))
    sims, inds = [], []
    for chunk in x.split(rows):
        s, i = (chunk @ y.T).topk(k, dim=-1)
        sims.append(s)
        inds.append(i)
    return torch.cat(sims), torch.cat(inds)


def mine(x: Tensor, y: Tensor, k: int = NEIGHBOURHOOD) -> list[tuple[int, int, float]]:
    """`mine_bitext` on embeddings of distinct sentences: (source row, target row, margin score)
    of every pair written out, best first."""
    if len(x) == 0 or len(y) == 0:
        return []
    x, y = F.normalize(x.double(), dim=-1), F.normalize(y.double(), dim=-1)
    x2y_sim, x2y_ind = knn(x, y, min(len(y), k))
    y2x_sim, y2x_ind = knn(y, x, min(len(x), k))
    x2y_mean, y2x_mean = x2y_sim.mean(1), y2x_sim.mean(1)
    fwd = x2y_sim / ((x2y_mean[:, None] + y2x_mean[x2y_ind]) / 2)
    bwd = y2x_sim / ((y2x_mean[:, None] + x2y_mean[y2x_ind]) / 2)
    fwd_best, bwd_best = _best(fwd, x2y_ind), _best(bwd, y2x_ind)
    cands = ([(i, j, s) for i, (j, s) in enumerate(fwd_best)]
             + [(i, j, s) for j, (i, s) in enumerate(bwd_best)])
    order = sorted(range(len(cands)), key=lambda n: _descending(cands[n][2]))
    seen_src, seen_trg = set(), set()
    out = []
    for n in order:
        i, j, s = cands[n]
        if i not in seen_src and j not in seen_trg:
            seen_src.add(i)
            seen_trg.add(j)
            if s > 0:
                out.append((i, j, s))
    return out


def _best(scores: Tensor, index: Tensor) -> list[tuple[int, float]]:
    """Per row, the neighbour with the highest score (numpy's argmax: a NaN wins, then the first
    of equal scores) and that score (numpy's max: NaN if any)."""
    nan = torch.isnan(scores)
    arg = torch.where(nan.any(1), nan.double().argmax(1), scores.argmax(1))
    top = torch.where(nan.any(1), torch.full_like(scores[:, 0], float("nan")),
                      scores.max(1).values)
    best = index.gather(1, arg[:, None])[:, 0]
    return list(zip(best.tolist(), top.tolist()))


def _descending(score: float) -> float:
    return float("inf") if score != score else -score  # NaN last, as np.argsort(-scores)


def mine_ids(sources: list[tuple[str, str]], src_emb: Tensor, targets: list[tuple[str, str]],
             trg_emb: Tensor, k: int = NEIGHBOURHOOD) -> dict[tuple[str, str], float]:
    """(source id, target id) -> margin score of the mined pairs (`candidate2score`). `sources`
    and `targets` are (id, sentence), row-aligned with their embeddings."""
    src_rows, src_texts = _unify([t for _, t in sources])
    trg_rows, trg_texts = _unify([t for _, t in targets])
    src_id, trg_id = _sent2id(sources), _sent2id(targets)
    out: dict[tuple[str, str], float] = {}
    for i, j, score in mine(src_emb[src_rows], trg_emb[trg_rows], k):
        s, t = src_texts[i].strip(), trg_texts[j].strip()
        if s in src_id and t in trg_id:
            key = (src_id[s], trg_id[t])
            out[key] = max(score, out.get(key, score))
    return out


def _unify(texts: list[str]) -> tuple[list[int], list[str]]:
    """`text_load_unify` + `unique_embeddings`: the distinct texts in first-seen order, each
    with the row of its last occurrence (the official dict keeps the last)."""
    last: dict[str, int] = {}
    for n, text in enumerate(texts):
        last[text] = n
    order = list(dict.fromkeys(texts))
    return [last[t] for t in order], order


def _sent2id(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """`read_sent2id`: stripped sentence -> id, without sentences that occur more than once."""
    counts = Counter(text.strip() for _, text in pairs)
    return {text.strip(): sid for sid, text in pairs if counts[text.strip()] == 1}
