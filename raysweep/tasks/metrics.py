"""Task metrics, keyed by the name a `Task` declares. Each takes a split and one prediction per
example (in the format of the task's head, see `raysweep.tasks.encoding`) and returns named floats,
in [0, 1] (XTREME prints them x100); `primary` reduces them to the task's one score.

They reproduce XTREME's official evaluation (`google-research/xtreme`, `evaluate.py` and
`third_party/`):

- `accuracy`: XNLI, PAWS-X, XCOPA and the English classification / multiple-choice tasks
  (`accuracy` in `evaluate.py`); on a retrieval split, `retrieval_accuracy`.
- `span_f1`: WikiANN NER, `seqeval.metrics.f1_score` (conlleval-style entity spans, micro).
- `pos_f1`: UD-POS as XTREME computes it: the same `seqeval` F1, applied to the UPOS tags
  themselves (XTREME's `evaluate.py` maps `udpos` to the seqeval `f1`).
- `token_accuracy`: CCG supertagging (per-word accuracy).
- `squad`: SQuAD v1.1 EM/F1 (the official `evaluate-v1.1.py`), for SQuAD, XQuAD, TyDiQA-GoldP.
- `mlqa`: MLQA's `mlqa_evaluation_v1.py`: language-aware answer normalization (per-language
  articles, Unicode punctuation, mixed segmentation for Chinese), keyed by the split's language.
- `squad_v2`: the official SQuAD 2.0 EM/F1 (unanswerable questions, gold "" when none).
- retrieval (`raysweep.tasks.retrieval_metrics`, each citing its official source): `map@20`
  (LAReQA, Mewsli-X), `retrieval_accuracy` (Tatoeba, English queries), `bucc_f1` (BUCC 2018:
  margin-mined pairs, threshold chosen on dev and applied to test, ties never split).
- `perplexity`: the causal-LM objective (per-token NLL and its exp).

`xtreme_r_aggregate` (`raysweep.tasks.aggregate`) turns per-task, per-language primary scores into
XTREME-R's aggregates: `xtreme_r` only when every task is there, else `xtreme_r_partial[...]`.
"""

from __future__ import annotations

import math
import re
import string
import sys
import unicodedata
import warnings
from collections import Counter
from functools import lru_cache
from typing import Any, Callable, Sequence

from raysweep.tasks.aggregate import (  # noqa: F401 - re-exported: the callers' one import
    BENCHMARKS,
    XTREME_R,
    XTREME_R_SYN,
    Benchmark,
    is_aggregate,
    xtreme_r_aggregate,
)
from raysweep.tasks.base import Split
from raysweep.tasks.retrieval_metrics import (  # noqa: F401 - re-exported
    average_precision_at_k,
    bucc_f1,
    bucc_scores,
    bucc_threshold,
    map_at_20,
    retrieval_accuracy,
)


def _check(split: Split, predictions: Sequence[Any]) -> None:
    if len(split.examples) != len(predictions):
        raise ValueError(f"{split.task}/{split.split}/{split.language}: "
                         f"{len(predictions)} predictions for {len(split.examples)} examples")


# --- classification ------------------------------------------------------------------------------


def accuracy(split: Split, predictions: list[Any]) -> dict[str, float]:
    """Label accuracy; on a retrieval split (examples with `relevant`), top-1 accuracy."""
    if split.examples and hasattr(split.examples[0], "relevant"):
        return retrieval_accuracy(split, predictions)
    gold = [ex.label for ex in split.examples]
    if len(gold) != len(predictions):
        raise ValueError(f"{split.task}/{split.split}/{split.language}: "
                         f"{len(predictions)} predictions for {len(gold)} examples")
    return {"accuracy": sum(int(p == g) for p, g in zip(predictions, gold)) / max(len(gold), 1)}


# --- tagging -------------------------------------------------------------------------------------


def _seqeval(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    from seqeval.metrics import f1_score, precision_score, recall_score

    _check(split, predictions)
    gold = [list(ex.tags) for ex in split.examples]
    pred = [list(p) for p in predictions]
    for ex, g, p in zip(split.examples, gold, pred):
        if len(g) != len(p):
            raise ValueError(f"{split.task}/{split.split}/{split.language}: example {ex.id!r} "
                             f"has {len(g)} tags but {len(p)} predicted")
    with warnings.catch_warnings():
        # seqeval warns once per non-BIO tag (every UPOS tag) and on zero division.
        warnings.simplefilter("ignore")
        return {"f1": float(f1_score(gold, pred)),
                "precision": float(precision_score(gold, pred)),
                "recall": float(recall_score(gold, pred))}


def span_f1(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro F1 (seqeval, default conlleval mode), as XTREME scores PAN-X."""
    return _seqeval(split, predictions)


def pos_f1(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """UD-POS as XTREME scores it: seqeval F1 over the UPOS tags, plus plain token accuracy."""
    out = _seqeval(split, predictions)
    out.update(token_accuracy(split, predictions))
    return out


def token_accuracy(split: Split, predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    _check(split, predictions)
    right = total = 0
    for ex, p in zip(split.examples, predictions):
        if len(ex.tags) != len(p):
            raise ValueError(f"{split.task}/{split.split}/{split.language}: example {ex.id!r} "
                             f"has {len(ex.tags)} tags but {len(p)} predicted")
        right += sum(int(a == b) for a, b in zip(ex.tags, p))
        total += len(p)
    return {"accuracy": right / max(total, 1)}


# --- extractive QA -------------------------------------------------------------------------------


def _squad_normalize(s: str) -> str:
    """SQuAD v1.1 `normalize_answer`: lower, drop punctuation, English articles, extra space."""
    s = s.lower()
    exclude = set(string.punctuation)
    s = "".join(ch for ch in s if ch not in exclude)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _em_f1(split: Split, predictions: Sequence[str],
           normalize: Callable[[str], str]) -> dict[str, float]:
    _check(split, predictions)
    em = f1 = 0.0
    for ex, pred in zip(split.examples, predictions):
        golds = [a.text for a in ex.answers]
        if not golds:
            raise ValueError(f"{split.task}/{split.split}/{split.language}: example {ex.id!r} "
                             "has no gold answer (field 'answers')")
        p = normalize(pred)
        em += max(float(p == normalize(g)) for g in golds)
        f1 += max(_token_f1(p.split(), normalize(g).split()) for g in golds)
    n = max(len(split.examples), 1)
    return {"em": em / n, "f1": f1 / n}


def squad(split: Split, predictions: Sequence[str]) -> dict[str, float]:
    """SQuAD v1.1 exact match and token F1, max over the gold answers."""
    return _em_f1(split, predictions, _squad_normalize)


@lru_cache(maxsize=1)
def _unicode_punct() -> frozenset[str]:
    unicode_p = (chr(i) for i in range(sys.maxunicode)
                 if unicodedata.category(chr(i)).startswith("P"))
    return frozenset(unicode_p) | frozenset(string.punctuation)


_MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": r"\sال^|ال",
}
_MLQA_WHITESPACE_LANGS = ("en", "es", "hi", "vi", "de", "ar")
_MLQA_MIXED_LANGS = ("zh",)


def mlqa_normalize(s: str, lang: str) -> str:
    """MLQA's `normalize_answer(s, lang)`: Unicode punctuation, per-language articles, and mixed
    segmentation (every CJK character and punctuation mark its own token) for Chinese."""
    if lang not in _MLQA_WHITESPACE_LANGS and lang not in _MLQA_MIXED_LANGS:
        raise ValueError(f"MLQA normalization: unknown language {lang!r}")
    punct = _unicode_punct()
    s = "".join(ch for ch in s.lower() if ch not in punct)
    if lang in _MLQA_ARTICLES:
        s = re.sub(_MLQA_ARTICLES[lang], " ", s)
    if lang in _MLQA_WHITESPACE_LANGS:
        tokens = s.split()
    else:
        tokens, buf = [], ""
        for ch in s:
            if re.search(r"[\u4e00-\u9fa5]", ch) or ch in punct:
                if buf:
                    tokens.extend(buf.split())
                    buf = ""
                tokens.append(ch)
            else:
                buf += ch
        if buf:
            tokens.extend(buf.split())
    return " ".join(t for t in tokens if t.strip())


def mlqa(split: Split, predictions: Sequence[str]) -> dict[str, float]:
    """MLQA EM/F1 with the normalization of the split's (context) language."""
    lang = split.language
    return _em_f1(split, predictions, lambda s: mlqa_normalize(s, lang))


def squad_v2(split: Split, predictions: Sequence[str]) -> dict[str, float]:
    """The official SQuAD 2.0 EM/F1: a question without answers has the gold answer ''."""
    _check(split, predictions)
    em = f1 = 0.0
    for ex, pred in zip(split.examples, predictions):
        golds = [a.text for a in ex.answers if _squad_normalize(a.text)] or [""]
        p = _squad_normalize(pred)
        em += max(float(p == _squad_normalize(g)) for g in golds)
        scores = []
        for g in golds:
            gt, pt = _squad_normalize(g).split(), p.split()
            scores.append(float(gt == pt) if not gt or not pt else _token_f1(pt, gt))
        f1 += max(scores)
    n = max(len(split.examples), 1)
    return {"em": em / n, "f1": f1 / n}


# --- language modelling --------------------------------------------------------------------------


def perplexity(split: Split, predictions: Sequence[tuple[float, int]]) -> dict[str, float]:
    """Per-token NLL over the split and its exp; predictions are (summed NLL, tokens)."""
    _check(split, predictions)
    nll = sum(p[0] for p in predictions)
    n = sum(p[1] for p in predictions)
    mean = nll / n if n else float("nan")
    return {"nll": mean, "perplexity": math.exp(mean) if n else float("nan")}


METRICS: dict[str, Callable[[Split, list[Any]], dict[str, float]]] = {
    "accuracy": accuracy,
    "span_f1": span_f1,
    "f1": span_f1,  # alias (the synthetic NER analogue declares "f1")
    "pos_f1": pos_f1,
    "token_accuracy": token_accuracy,
    "squad": squad,
    "mlqa": mlqa,
    "squad_v2": squad_v2,
    "map@20": map_at_20,
    "retrieval_accuracy": retrieval_accuracy,
    "bucc_f1": bucc_f1,
    "perplexity": perplexity,
}


def primary(metric: str, values: dict[str, float]) -> float:
    """The one number a task contributes (XTREME-R: QA tasks score (EM + F1) / 2)."""
    if "em" in values and "f1" in values:
        return (values["em"] + values["f1"]) / 2
    return values[next(iter(values))]
