"""Every metric agrees to 1e-9 with a reference run in the same test on randomized predictions.

The references are separate, literal transcriptions of the official evaluation code (XTREME's
`evaluate.py`, SQuAD's `evaluate-v1.1.py` and `evaluate-v2.0.py`, MLQA's
`mlqa_evaluation_v1.py`, XTREME-R's `average_precision_at_k` / Mewsli-X's `evaluate`, XTREME's
BUCC `bucc_optimize` + `bucc_extract` + `bucc_f1`) or the `seqeval` package itself, written
against the official data layouts (SQuAD-style JSON dicts, id -> prediction maps, label files),
not against `raysweep`'s code. Perplexity is checked against token probabilities computed here
(by hand, and from a numpy softmax of random logits).
"""

from __future__ import annotations

import collections
import math
import random
import re
import string
import sys
import unicodedata
import warnings
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall

from raysweep.tasks import metrics
from raysweep.tasks.base import (
    Answer,
    ChoiceExample,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    Split,
    TaggingExample,
    TextExample,
)
from raysweep.tasks.encoding import Ranking

TOL = 1e-9
SEEDS = range(5)


# ================================ references (literal transcriptions) ============================

# --- XTREME evaluate.py ---------------------------------------------------------------------------

def ref_xtreme_f1(labels, predictions, language=None):
    f1 = seqeval_f1(labels, predictions)
    precision = seqeval_precision(labels, predictions)
    recall = seqeval_recall(labels, predictions)
    return {'f1': f1 * 100, 'precision': precision * 100, 'recall': recall * 100}


def ref_xtreme_accuracy(labels, predictions, language=None):
    correct = sum([int(p == l) for p, l in zip(predictions, labels)])
    accuracy = float(correct) / len(predictions)
    return {'accuracy': accuracy * 100}


def ref_bucc_f1(labels, predictions, language=None):
    labels = set([tuple(l.split('\t')) for l in labels])
    predictions = set([tuple(l.split('\t')) for l in predictions])
    ncorrect = len(labels.intersection(predictions))
    if ncorrect > 0:
        precision = ncorrect / len(predictions)
        recall = ncorrect / len(labels)
        f1 = 2 * precision * recall / (precision + recall)
    else:
        precision = recall = f1 = 0
    return {'f1': f1 * 100, 'precision': precision * 100, 'recall': recall * 100}


# --- XTREME third_party/utils_retrieve.py (BUCC mining threshold) ---------------------------------

def ref_bucc_optimize(candidate2score, gold):
    items = sorted(candidate2score.items(), key=lambda x: -x[1])
    ngold = len(gold)
    nextract = ncorrect = 0
    threshold = 0
    best_f1 = 0
    for i in range(len(items)):
        nextract += 1
        if '\t'.join(items[i][0]) in gold:
            ncorrect += 1
        if ncorrect > 0:
            precision = ncorrect / nextract
            recall = ncorrect / ngold
            f1 = 2 * precision * recall / (precision + recall)
            if f1 > best_f1:
                best_f1 = f1
                threshold = (items[i][1] + items[i + 1][1]) / 2
    return threshold


def ref_bucc_extract(cand2score, th):
    bitexts = []
    for (src, trg), score in cand2score.items():
        if score >= th:
            bitexts.append(src + '\t' + trg)
    return bitexts


# --- SQuAD evaluate-v1.1.py ----------------------------------------------------------------------

def v1_normalize_answer(s):
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def v1_f1_score(prediction, ground_truth):
    prediction_tokens = v1_normalize_answer(prediction).split()
    ground_truth_tokens = v1_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def v1_exact_match_score(prediction, ground_truth):
    return (v1_normalize_answer(prediction) == v1_normalize_answer(ground_truth))


def v1_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def v1_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article['paragraphs']:
            for qa in paragraph['qas']:
                total += 1
                if qa['id'] not in predictions:
                    continue
                ground_truths = list(map(lambda x: x['text'], qa['answers']))
                prediction = predictions[qa['id']]
                exact_match += v1_metric_max_over_ground_truths(
                    v1_exact_match_score, prediction, ground_truths)
                f1 += v1_metric_max_over_ground_truths(
                    v1_f1_score, prediction, ground_truths)
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {'exact_match': exact_match, 'f1': f1}


# --- SQuAD evaluate-v2.0.py ----------------------------------------------------------------------

def v2_get_tokens(s):
    if not s:
        return []
    return v1_normalize_answer(s).split()


def v2_compute_exact(a_gold, a_pred):
    return int(v1_normalize_answer(a_gold) == v1_normalize_answer(a_pred))


def v2_compute_f1(a_gold, a_pred):
    gold_toks = v2_get_tokens(a_gold)
    pred_toks = v2_get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def v2_get_raw_scores(dataset, preds):
    exact_scores = {}
    f1_scores = {}
    for article in dataset:
        for p in article['paragraphs']:
            for qa in p['qas']:
                qid = qa['id']
                gold_answers = [a['text'] for a in qa['answers']
                                if v1_normalize_answer(a['text'])]
                if not gold_answers:
                    # For unanswerable questions, only correct answer is empty string
                    gold_answers = ['']
                if qid not in preds:
                    continue
                a_pred = preds[qid]
                # Take max over all gold answers
                exact_scores[qid] = max(v2_compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(v2_compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def v2_make_eval_dict(exact_scores, f1_scores, qid_list=None):
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict([
            ('exact', 100.0 * sum(exact_scores.values()) / total),
            ('f1', 100.0 * sum(f1_scores.values()) / total),
            ('total', total),
        ])


# --- MLQA mlqa_evaluation_v1.py ------------------------------------------------------------------

PUNCT = {chr(i) for i in range(sys.maxunicode)
         if unicodedata.category(chr(i)).startswith('P')}.union(string.punctuation)
WHITESPACE_LANGS = ['en', 'es', 'hi', 'vi', 'de', 'ar']
MIXED_SEGMENTATION_LANGS = ['zh']


def whitespace_tokenize(text):
    return text.split()


def mixed_segmentation(text):
    segs_out = []
    temp_str = ""
    for char in text:
        if re.search(r'[\u4e00-\u9fa5]', char) or char in PUNCT:
            if temp_str != "":
                ss = whitespace_tokenize(temp_str)
                segs_out.extend(ss)
                temp_str = ""
            segs_out.append(char)
        else:
            temp_str += char

    if temp_str != "":
        ss = whitespace_tokenize(temp_str)
        segs_out.extend(ss)

    return segs_out


def mlqa_normalize_answer(s, lang):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text, lang):
        if lang == 'en':
            return re.sub(r'\b(a|an|the)\b', ' ', text)
        elif lang == 'es':
            return re.sub(r'\b(un|una|unos|unas|el|la|los|las)\b', ' ', text)
        elif lang == 'hi':
            return text  # Hindi does not have formal articles
        elif lang == 'vi':
            return re.sub(r'\b(của|là|cái|chiếc|những)\b', ' ', text)
        elif lang == 'de':
            return re.sub(r'\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b',
                          ' ', text)
        elif lang == 'ar':
            return re.sub('\\sال^|ال', ' ', text)
        elif lang == 'zh':
            return text  # Chinese does not have formal articles
        else:
            raise Exception('Unknown Language {}'.format(lang))

    def white_space_fix(text, lang):
        if lang in WHITESPACE_LANGS:
            tokens = whitespace_tokenize(text)
        elif lang in MIXED_SEGMENTATION_LANGS:
            tokens = mixed_segmentation(text)
        else:
            raise Exception('Unknown Language {}'.format(lang))
        return ' '.join([t for t in tokens if t.strip() != ''])

    def remove_punc(text):
        return ''.join(ch for ch in text if ch not in PUNCT)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s)), lang), lang)


def mlqa_f1_score(prediction, ground_truth, lang):
    prediction_tokens = mlqa_normalize_answer(prediction, lang).split()
    ground_truth_tokens = mlqa_normalize_answer(ground_truth, lang).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def mlqa_exact_match_score(prediction, ground_truth, lang):
    return (mlqa_normalize_answer(prediction, lang) == mlqa_normalize_answer(ground_truth, lang))


def mlqa_metric_max_over_ground_truths(metric_fn, prediction, ground_truths, lang):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth, lang)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def mlqa_evaluate(dataset, predictions, lang):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article['paragraphs']:
            for qa in paragraph['qas']:
                total += 1
                if qa['id'] not in predictions:
                    continue
                ground_truths = list(map(lambda x: x['text'], qa['answers']))
                prediction = predictions[qa['id']]
                exact_match += mlqa_metric_max_over_ground_truths(
                    mlqa_exact_match_score, prediction, ground_truths, lang)
                f1 += mlqa_metric_max_over_ground_truths(
                    mlqa_f1_score, prediction, ground_truths, lang)

    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total

    return {'exact_match': exact_match, 'f1': f1}


# --- XTREME-R third_party/utils_lareqa.py, utils_mewslix.py -------------------------------------

def ref_average_precision_at_k(targets, ranked_predictions, k=None):
    """Computes AP@k given targets and ranked predictions."""
    if k:
        ranked_predictions = ranked_predictions[:k]
    score = 0.0
    hits = 0.0
    for i, pred in enumerate(ranked_predictions):
        if pred in targets and pred not in ranked_predictions[:i]:
            hits += 1.0
            score += hits / (i + 1.0)
    divisor = min(len(targets), k) if k else len(targets)
    return score / divisor


def ref_mean_reciprocal_rank(golds, predictions):
    def _reciprocal_rank(labels):
        for rank, label in enumerate(labels, start=1):
            if label:
                return 1.0 / rank
        return 0.0

    assert len(golds) == len(predictions)

    reciprocal_ranks = []
    for gold, prediction_list in zip(golds, predictions):
        labels = [int(p == gold) for p in prediction_list]
        reciprocal_ranks.append(_reciprocal_rank(labels))
    if reciprocal_ranks:
        return sum(reciprocal_ranks) / len(reciprocal_ranks)
    return 0.0


def ref_mewslix_evaluate(gold_data, predictions, k=20):
    gold_single_labels = {
        ex_id: labels[0].strip() for ex_id, labels in gold_data.items()
    }
    gold_ids = []
    pred_ids = []
    for example_id, gold in gold_single_labels.items():
        top_k_preds = predictions.get(example_id, [])[:k]
        gold_ids.append(gold)
        pred_ids.append(top_k_preds)
    return ref_mean_reciprocal_rank(golds=gold_ids, predictions=pred_ids)


# ================================ random data ====================================================

WORDS = {
    "en": ["the", "a", "an", "The", "cat", "Mary", "Shelley", "1818", "book", "park", "New",
           "York", "of", "and"],
    "es": ["el", "la", "los", "Las", "unos", "una", "gato", "libro", "Madrid", "de", "y"],
    "de": ["der", "die", "Das", "ein", "einem", "des", "Hund", "Buch", "Berlin", "und"],
    "vi": ["của", "là", "cái", "chiếc", "những", "mèo", "sách", "Hà", "Nội"],
    "ar": ["الكتاب", "القط", "كتاب", "في", "مدينة", "ال", "و"],
    "hi": ["किताब", "बिल्ली", "में", "और", "दिल्ली"],
    "zh": ["北京", "猫", "书", "的", "是", "abc", "2019年", "玛丽"],
}
PUNCTS = [".", ",", "!", "?", "'", "\"", "«", "»", "、", "。", "-", "(", ")", "¿", "،", "…", "—"]


def rand_text(rng: random.Random, lang: str, n: int | None = None) -> str:
    n = rng.randint(0, 6) if n is None else n
    out = []
    for _ in range(n):
        w = rng.choice(WORDS[lang])
        if rng.random() < 0.25:
            w = w + rng.choice(PUNCTS)
        if rng.random() < 0.1:
            w = rng.choice(PUNCTS) + w
        out.append(w)
    sep = "" if lang == "zh" and rng.random() < 0.5 else " "
    return sep.join(out) + ("  " if rng.random() < 0.1 else "")


def perturb(rng: random.Random, text: str, lang: str) -> str:
    r = rng.random()
    if r < 0.3:
        return text
    if r < 0.45:
        return text.upper() if rng.random() < 0.5 else "  " + text + rng.choice(PUNCTS)
    if r < 0.6:
        return ""
    if r < 0.8:
        words = text.split()
        return " ".join(words[: max(1, len(words) // 2)])
    return rand_text(rng, lang)


def qa_data(rng: random.Random, lang: str, n: int = 60, allow_empty=False):
    examples, dataset, preds = [], [], {}
    for i in range(n):
        golds = [rand_text(rng, lang, rng.randint(1, 5)) for _ in range(rng.randint(1, 3))]
        if allow_empty and rng.random() < 0.3:
            golds = []
        context = " ".join(golds) + " " + rand_text(rng, lang)
        examples.append(SpanQAExample(f"q{i}", "?", context,
                                      tuple(Answer(g, max(context.find(g), 0)) for g in golds)))
        dataset.append({"paragraphs": [{"context": context, "qas": [{
            "id": f"q{i}", "question": "?",
            "answers": [{"text": g, "answer_start": max(context.find(g), 0)} for g in golds]}]}]})
        base = rng.choice(golds) if golds else rand_text(rng, lang)
        preds[f"q{i}"] = perturb(rng, base, lang)
    return examples, dataset, preds


# ================================ tests ==========================================================


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy(seed):
    rng = random.Random(seed)
    gold = [rng.randrange(3) for _ in range(200)]
    pred = [g if rng.random() < 0.5 else rng.randrange(3) for g in gold]
    split = Split("xnli", "test", "de", tuple(PairExample(str(i), "a", "b", g)
                                              for i, g in enumerate(gold)))
    ref = ref_xtreme_accuracy([str(g) for g in gold], [str(p) for p in pred])
    assert abs(metrics.accuracy(split, pred)["accuracy"] * 100 - ref["accuracy"]) < TOL
    mc = Split("xcopa", "test", "et", tuple(ChoiceExample(str(i), "c", ("x", "y", "z"), g)
                                             for i, g in enumerate(gold)))
    assert abs(metrics.accuracy(mc, pred)["accuracy"] * 100 - ref["accuracy"]) < TOL


NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"]


def tagging(rng, tagset, n=80):
    gold, pred = [], []
    for _ in range(n):
        length = rng.randint(1, 15)
        g = [rng.choice(tagset) for _ in range(length)]
        p = [t if rng.random() < 0.7 else rng.choice(tagset) for t in g]
        gold.append(g)
        pred.append(p)
    split = Split("t", "test", "xx", tuple(TaggingExample(str(i), tuple("w" * len(g)), tuple(g))
                                           for i, g in enumerate(gold)))
    return split, gold, pred


@pytest.mark.parametrize("seed", SEEDS)
def test_ner_span_f1_is_seqeval(seed):
    split, gold, pred = tagging(random.Random(seed), NER)
    ours = metrics.span_f1(split, [tuple(p) for p in pred])
    ref = ref_xtreme_f1(gold, pred)
    for k in ("f1", "precision", "recall"):
        assert abs(ours[k] * 100 - ref[k]) < TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_pos_f1_as_xtreme(seed):
    split, gold, pred = tagging(random.Random(seed), UPOS)
    ours = metrics.pos_f1(split, [tuple(p) for p in pred])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = ref_xtreme_f1(gold, pred)  # XTREME's evaluate.py maps udpos to this `f1`
    for k in ("f1", "precision", "recall"):
        assert abs(ours[k] * 100 - ref[k]) < TOL
    flat = [(a, b) for g, p in zip(gold, pred) for a, b in zip(g, p)]
    ref_accuracy = sum(a == b for a, b in flat) / len(flat)
    assert 0 < ref_accuracy < 1  # the random data is not degenerate
    assert abs(ours["accuracy"] - ref_accuracy) < TOL
    assert abs(metrics.token_accuracy(split, pred)["accuracy"] - ref_accuracy) < TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_squad_v11(seed):
    rng = random.Random(seed)
    examples, dataset, preds = qa_data(rng, "en")
    split = Split("xquad", "test", "en", tuple(examples))
    ours = metrics.squad(split, [preds[ex.id] for ex in examples])
    ref = v1_evaluate(dataset, preds)
    assert abs(ours["em"] * 100 - ref["exact_match"]) < TOL
    assert abs(ours["f1"] * 100 - ref["f1"]) < TOL
    assert 0 < ref["f1"] < 100  # the random data is not degenerate


@pytest.mark.parametrize("lang", ["en", "es", "hi", "vi", "de", "ar", "zh"])
def test_mlqa_language_aware(lang):
    for seed in SEEDS:
        rng = random.Random(f"{lang}{seed}")
        examples, dataset, preds = qa_data(rng, lang)
        split = Split("mlqa", "test", lang, tuple(examples))
        ours = metrics.mlqa(split, [preds[ex.id] for ex in examples])
        ref = mlqa_evaluate(dataset, preds, lang)
        assert abs(ours["em"] * 100 - ref["exact_match"]) < TOL
        assert abs(ours["f1"] * 100 - ref["f1"]) < TOL
        assert 0 < ref["exact_match"] < 100 and 0 < ref["f1"] < 100  # not degenerate


def test_mlqa_differs_from_squad_where_it_should():
    ex = SpanQAExample("1", "?", "x", (Answer("el gato", 0),))
    split = Split("mlqa", "test", "es", (ex,))
    assert metrics.mlqa(split, ["gato"])["em"] == 1.0  # Spanish article dropped
    assert metrics.squad(split, ["gato"])["em"] == 0.0
    zh = Split("mlqa", "test", "zh", (SpanQAExample("1", "?", "x", (Answer("北京猫", 0),)),))
    assert metrics.mlqa(zh, ["北京"])["f1"] == pytest.approx(0.8)  # per-character tokens


@pytest.mark.parametrize("seed", SEEDS)
def test_squad_v2(seed):
    rng = random.Random(seed)
    examples, dataset, preds = qa_data(rng, "en", allow_empty=True)
    split = Split("squad_v2", "validation", "en", tuple(examples))
    ours = metrics.squad_v2(split, [preds[ex.id] for ex in examples])
    ref = v2_make_eval_dict(*v2_get_raw_scores(dataset, preds))
    assert abs(ours["em"] * 100 - ref["exact"]) < TOL
    assert abs(ours["f1"] * 100 - ref["f1"]) < TOL
    assert 0 < ref["exact"] < 100 and 0 < ref["f1"] < 100  # not degenerate


@pytest.mark.parametrize("seed", SEEDS)
def test_map_at_20_lareqa(seed):
    """LAReQA: up to 11 relevant candidates per question; ranking by encoding dot products, as
    XTREME-R's `mean_avg_prec_at_k` does."""
    rng = np.random.default_rng(seed)
    n_q, n_c = 40, 120
    q_enc, c_enc = rng.normal(size=(n_q, 16)), rng.normal(size=(n_c, 16))
    cand_ids = [f"c{j}" for j in range(n_c)]
    examples, preds, ref_aps = [], [], []
    for i in range(n_q):
        rel = rng.choice(n_c, size=rng.integers(1, 12), replace=False)
        examples.append(RetrievalExample(f"q{i}", "q", tuple(cand_ids[j] for j in rel)))
        scores = q_enc[i] @ c_enc.T
        y_true = np.zeros(n_c)
        y_true[rel] = 1
        ref_aps.append(ref_average_precision_at_k(
            np.where(y_true == 1)[0], np.squeeze(scores).argsort()[::-1], 20))
        order = np.argsort(-scores, kind="stable")[:100]
        preds.append(Ranking([cand_ids[j] for j in order], scores[order].tolist()))
    split = Split("lareqa", "test", "en", tuple(examples))
    ours = metrics.map_at_20(split, preds)["map@20"]
    assert abs(ours - float(np.mean(ref_aps))) < TOL
    assert 0 < ours < 1


@pytest.mark.parametrize("seed", SEEDS)
def test_map_at_20_mewslix_is_mrr_at_20(seed):
    rng = random.Random(seed)
    entities = [f"Q{j}" for j in range(60)]
    examples, preds, gold_data, pred_data = [], [], {}, {}
    for i in range(50):
        gold = rng.choice(entities)
        ranked = rng.sample(entities, 30)
        if rng.random() < 0.5 and gold not in ranked[:20]:
            ranked[rng.randrange(20)] = gold
        examples.append(RetrievalExample(f"m{i}", "mention", (gold,)))
        preds.append(ranked)
        gold_data[f"m{i}"] = [gold]
        pred_data[f"m{i}"] = ranked
    split = Split("mewslix", "test", "ar", tuple(examples))
    ours = metrics.map_at_20(split, preds)["map@20"]
    assert abs(ours - ref_mewslix_evaluate(gold_data, pred_data, k=20)) < TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_tatoeba_accuracy(seed):
    rng = random.Random(seed)
    n = 100
    gold = list(range(n))
    pred_idx = [g if rng.random() < 0.6 else rng.randrange(n) for g in gold]
    examples = tuple(RetrievalExample(f"s{i}", "x", (f"t{i}",)) for i in range(n))
    preds = [Ranking([f"t{p}", f"t{(p + 1) % n}"], [0.9, 0.1]) for p in pred_idx]
    ours = metrics.retrieval_accuracy(Split("tatoeba", "test", "de", examples), preds)
    ref = ref_xtreme_accuracy([str(g) for g in gold], [str(p) for p in pred_idx])
    assert abs(ours["accuracy"] * 100 - ref["accuracy"]) < TOL


@pytest.mark.parametrize("seed", SEEDS)
def test_bucc_f1(seed):
    rng = random.Random(seed)
    n_src, n_trg = 80, 90
    examples, preds, cand2score, gold = [], [], {}, []
    for i in range(n_src):
        has_gold = rng.random() < 0.5
        rel = (f"en-{i:09d}",) if has_gold else ()
        examples.append(RetrievalExample(f"de-{i:09d}", "x", rel))
        if has_gold:
            gold.append(f"de-{i:09d}\ten-{i:09d}")
        right = has_gold and rng.random() < 0.6
        trg = f"en-{i:09d}" if right else f"en-{rng.randrange(n_trg):09d}"
        score = rng.uniform(0.5, 1.0) if right else rng.uniform(0.0, 0.8)
        preds.append(Ranking([trg], [score]))
        cand2score[(f"de-{i:09d}", trg)] = score
    # the official `bucc_optimize` reads items[i + 1]: end the list on a low, wrong candidate
    cand2score[("de-999999999", "en-999999999")] = -1.0
    examples.append(RetrievalExample("de-999999999", "x", ()))
    preds.append(Ranking(["en-999999999"], [-1.0]))
    split = Split("bucc", "test", "de", tuple(examples))
    ours = metrics.bucc_f1(split, preds)
    threshold = ref_bucc_optimize(cand2score, set(gold))
    ref = ref_bucc_f1(gold, ref_bucc_extract(cand2score, threshold))
    for k in ("f1", "precision", "recall"):
        assert abs(ours[k] * 100 - ref[k]) < TOL
    assert 0 < ours["f1"] < 1


def test_perplexity_by_hand():
    """Predicted-token probabilities 1/2 and 1/4 in one example, 1/8 in another, none in a
    third: the NLL is the token-weighted mean (ln 2 + ln 4 + ln 8) / 3 = 2 ln 2 nats, and the
    perplexity (2 * 4 * 8) ** (1/3) = 4. A per-example mean would give 2.25 ln 2 (or 1.5 ln 2
    counting the empty example), exp in base 2 would give 2 ** (2 ln 2) = 2.61."""
    split = Split("lm", "test", "en", tuple(TextExample(str(i), "x") for i in range(3)))
    m = metrics.perplexity(split, [(math.log(2) + math.log(4), 2), (math.log(8), 1), (0.0, 0)])
    assert m["nll"] == pytest.approx(2 * math.log(2), abs=TOL)
    assert m["perplexity"] == pytest.approx(4.0, abs=TOL)
    empty = metrics.perplexity(Split("lm", "test", "en", ()), [])
    assert math.isnan(empty["nll"]) and math.isnan(empty["perplexity"])


@pytest.mark.parametrize("seed", SEEDS)
def test_perplexity_from_random_logits(seed):
    """Predictions as the causal-LM head makes them (summed next-token cross-entropy, token
    count) from random float64 logits; the reference is the geometric mean of 1 / p over all
    tokens, p each target's softmax probability computed here in numpy."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    examples, preds, probs = [], [], []
    for i in range(20):
        n = rng.randint(0, 12)
        logits = 3 * torch.randn(n, 50, generator=g, dtype=torch.float64)
        targets = torch.randint(50, (n,), generator=g)
        preds.append((float(F.cross_entropy(logits, targets, reduction="sum")), n))
        z = logits.numpy()
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        probs += p[np.arange(n), targets.numpy()].tolist()
        examples.append(TextExample(str(i), "x"))
    probs = np.asarray(probs)
    m = metrics.perplexity(Split("lm", "test", "en", tuple(examples)), preds)
    assert abs(m["nll"] - float(-np.log(probs).mean())) < TOL
    assert abs(m["perplexity"] / float(np.prod(probs ** (-1.0 / len(probs)))) - 1) < TOL
    assert m["perplexity"] > 10  # far from 1: the comparison is not degenerate


def test_primary_and_lengths():
    assert metrics.primary("squad", {"em": 0.5, "f1": 0.7}) == pytest.approx(0.6)
    assert metrics.primary("map@20", {"map@20": 0.3}) == 0.3
    assert metrics.primary("span_f1", {"f1": 0.4, "precision": 0.1, "recall": 0.2}) == 0.4
    split = Split("xnli", "test", "de", (PairExample("1", "a", "b", 0),))
    with pytest.raises(ValueError, match="2 predictions for 1 examples"):
        metrics.accuracy(split, [0, 1])


# XTREME-R: each task's mean over languages, QA as (EM + F1) / 2, mean over tasks and per group
# (the display logic of XTREME's evaluate.py, with XTREME-R's task groups).
XTREME_R_GROUP2TASK = {
    "classification": ["xnli", "xcopa"],
    "structured": ["udpos", "wikiann"],
    "qa": ["xquad", "mlqa", "tydiqa"],
    "retrieval": ["tatoeba", "mewslix", "lareqa"],
}


def ref_xtreme_r(per_task_metrics):
    """per_task_metrics[task][metric][lang] -> XTREME's avg_metric per task and group means."""
    detailed = {}
    for task, score in per_task_metrics.items():
        avg = {f"avg_{m}": sum(score[m].values()) / len(score[m]) for m in score}
        if task in XTREME_R_GROUP2TASK["qa"]:
            avg["avg_metric"] = (avg["avg_exact_match"] + avg["avg_f1"]) / 2
        else:
            avg["avg_metric"] = next(v for k, v in avg.items())
        detailed[task] = avg
    overall = {"all_task": sum(d["avg_metric"] for d in detailed.values()) / len(detailed)}
    for group, tasks in XTREME_R_GROUP2TASK.items():
        overall[group] = sum(detailed[t]["avg_metric"] for t in tasks) / len(tasks)
    return overall


def test_xtreme_r_aggregate():
    rng = random.Random(0)
    langs = {"xnli": 15, "xcopa": 11, "udpos": 38, "wikiann": 48, "xquad": 12, "mlqa": 7,
             "tydiqa": 9, "tatoeba": 41, "mewslix": 11, "lareqa": 11}
    raw, primary_scores = {}, {}
    for task, n in langs.items():
        metric = ({"exact_match", "f1"} if task in XTREME_R_GROUP2TASK["qa"] else {"score"})
        raw[task] = {m: {f"l{i}": rng.random() for i in range(n)} for m in sorted(metric)}
        primary_scores[task] = {
            lang: (metrics.primary("squad", {"em": raw[task]["exact_match"][lang],
                                             "f1": raw[task]["f1"][lang]})
                   if task in XTREME_R_GROUP2TASK["qa"] else raw[task]["score"][lang])
            for lang in raw[task][next(iter(raw[task]))]}
    primary_scores["pawsx"] = {"de": 1.0}  # not an XTREME-R task: ignored
    ours = metrics.xtreme_r_aggregate(primary_scores)
    ref = ref_xtreme_r(raw)
    assert set(ours) == {"xtreme_r", "xtreme_r/classification", "xtreme_r/structured",
                         "xtreme_r/qa", "xtreme_r/retrieval"}
    assert abs(ours["xtreme_r"] - ref["all_task"]) < TOL
    for group in XTREME_R_GROUP2TASK:
        assert abs(ours[f"xtreme_r/{group}"] - ref[group]) < TOL
    partial = metrics.xtreme_r_aggregate({"xnli": {"de": 0.5, "en": 0.7}, "mlqa": {"de": 0.2}})
    assert partial == pytest.approx({"xtreme_r": 0.4, "xtreme_r/classification": 0.6,
                                     "xtreme_r/qa": 0.2})
