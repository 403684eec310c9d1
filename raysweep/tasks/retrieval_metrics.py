"""Retrieval metrics, each a transcription of the official code it names (google-research/xtreme):

- `map_at_20`: XTREME-R's mAP@20, `average_precision_at_k` in `third_party/utils_lareqa.py`
  (LAReQA); for Mewsli-X, with one gold entity, it equals `utils_mewslix.evaluate` (MRR@20).
- `retrieval_accuracy`: Tatoeba, `accuracy` in `evaluate.py` on the predictions of
  `third_party/evaluate_retrieval.py` (task tatoeba): the top-ranked candidate is the gold one.
  The direction (English queries) is the loader's (`raysweep.tasks.retrieval`).
- `bucc_f1`: BUCC 2018, `bucc_eval` in `third_party/utils_retrieve.py`: the mined pairs
  (`raysweep.tasks.encoding.mining`) above a score threshold, F1 against the gold pairs
  (`bucc_f1` in `evaluate.py`). The threshold is the F1-optimal one on the dev split
  (`bucc_optimize`, run on dev in `evaluate_retrieval.py`'s `for split in ['dev', 'test']`) and is
  applied to test; unlike `bucc_optimize`, it only cuts between distinct scores.

Predictions are `Ranking`s (ids with `.scores`, `raysweep.tasks.encoding`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from raysweep.tasks.base import Split
from raysweep.tasks.retrieval_data import as_retrieval, dev_sentences


def _check(split: Split, predictions: Sequence[Any]) -> None:
    if len(split.examples) != len(predictions):
        raise ValueError(f"{split.task}/{split.split}/{split.language}: "
                         f"{len(predictions)} predictions for {len(split.examples)} examples")


def average_precision_at_k(targets: Sequence[str], ranked: Sequence[str], k: int | None) -> float:
    """XTREME-R's AP@k: precision at each new hit in the top k, over min(|targets|, k)."""
    if k:
        ranked = list(ranked)[:k]
    targets = set(targets)
    score = hits = 0.0
    seen: set[str] = set()
    for i, pred in enumerate(ranked):
        if pred in targets and pred not in seen:
            hits += 1.0
            score += hits / (i + 1.0)
        seen.add(pred)
    divisor = min(len(targets), k) if k else len(targets)
    return score / divisor if divisor else 0.0


def map_at_20(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """mAP@20 (LAReQA, Mewsli-X): predictions are ranked candidate ids per query. A SQuAD split
    (LAReQA's English dev) is scored as the retrieval the encoder made of it."""
    split = as_retrieval(split)
    _check(split, predictions)
    aps = [average_precision_at_k(ex.relevant, p, 20)
           for ex, p in zip(split.examples, predictions)]
    return {"map@20": sum(aps) / max(len(aps), 1)}


def retrieval_accuracy(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """Tatoeba: the top-ranked candidate is a gold translation."""
    _check(split, predictions)
    right = sum(int(bool(p) and p[0] in ex.relevant)
                for ex, p in zip(split.examples, predictions))
    return {"accuracy": right / max(len(split.examples), 1)}


# --- BUCC ----------------------------------------------------------------------------------------

Pair = tuple[str, str]


def bucc_threshold(cand2score: Mapping[Pair, float], gold: set[Pair]) -> float:
    """XTREME's `bucc_optimize` without cuts inside ties: walking the candidates from the best
    score down, F1 is computed only after the last of each group of equal scores (all pairs with
    one score are extracted together, as `score >= threshold` does), and the threshold is the
    midpoint between that score and the next lower one. The first best F1 wins; no correct pair
    leaves the original's threshold 0. Where the best cut keeps every candidate (the original
    then reads past the end of its list and fails), the threshold is -inf: keep every mined
    pair."""
    items = sorted(cand2score.items(), key=lambda x: -x[1])
    ngold = len(gold)
    nextract = ncorrect = 0
    threshold = 0.0
    best_f1 = 0.0
    i = 0
    while i < len(items):
        j = i
        while j < len(items) and items[j][1] == items[i][1]:
            nextract += 1
            ncorrect += items[j][0] in gold
            j += 1
        if ncorrect > 0:
            precision, recall = ncorrect / nextract, ncorrect / ngold
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = ((items[i][1] + items[j][1]) / 2 if j < len(items)
                             else float("-inf"))
        i = j
    return threshold


def bucc_scores(cand2score: Mapping[Pair, float], gold: set[Pair],
                threshold: float) -> dict[str, float]:
    """`bucc_extract` (every pair scoring >= threshold) scored as `evaluate.py`'s `bucc_f1`."""
    bitexts = {pair for pair, score in cand2score.items() if score >= threshold}
    ncorrect = len(gold & bitexts)
    if ncorrect == 0:
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0}
    precision, recall = ncorrect / len(bitexts), ncorrect / len(gold)
    return {"f1": 2 * precision * recall / (precision + recall), "precision": precision,
            "recall": recall}


def bucc_f1(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """BUCC 2018 F1 of the mined pairs above the threshold chosen on dev. Predictions: each
    source sentence's mined English sentence as a one-id `Ranking` with its margin score (empty
    when none was mined); on a test split, `predictions.dev` holds the mined pairs of the dev
    sentences the split carries (`retrieval_data.DevSentence`, `encoding.retrieval.Mined`). A
    validation split is scored at its own optimal threshold (what XTREME prints for dev)."""
    _check(split, predictions)
    gold = {(ex.id, t) for ex in split.examples for t in ex.relevant}
    cand2score = {}
    for ex, p in zip(split.examples, predictions):
        if len(p) == 0:
            continue
        scores = getattr(p, "scores", None)
        if not scores:
            raise ValueError(f"{split.task}: bucc_f1 needs scored rankings (encoding.Ranking)")
        cand2score[(ex.id, p[0])] = float(scores[0])
    dev_src, _ = dev_sentences(split)
    if dev_src:
        dev = getattr(predictions, "dev", None)
        if dev is None:
            raise ValueError(f"{split.task}/{split.split}: the split carries dev sentences but "
                             "the predictions have no mined dev pairs (`.dev`)")
        threshold = bucc_threshold(dev, {(s.id, t) for s in dev_src for t in s.relevant})
    elif split.split == "validation":
        threshold = bucc_threshold(cand2score, gold)
    else:
        raise ValueError(f"{split.task}/{split.split}: BUCC's threshold is chosen on dev; this "
                         "split carries no dev sentences (load it with the task's loader)")
    return bucc_scores(cand2score, gold, threshold)
