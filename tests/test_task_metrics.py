"""Every metric agrees to 1e-9 with a reference run in the same test on randomized predictions.

The references are separate, literal transcriptions of the official evaluation code (XTREME's
`evaluate.py`, SQuAD's `evaluate-v1.1.py` and `evaluate-v2.0.py`, MLQA's
`mlqa_evaluation_v1.py`, XTREME-R's `average_precision_at_k` / Mewsli-X's `evaluate`, XTREME's
BUCC mining `mine_bitext` + `read_candidate2score` + `bucc_optimize` + `bucc_extract` +
`bucc_f1`, Tatoeba's `similarity_search`, `evaluate.py`'s aggregate display logic) or the
`seqeval` package itself, written against the official data layouts (SQuAD-style JSON dicts,
id -> prediction maps, label files, candidate lines), not against `raysweep`'s code. Perplexity
is checked against token probabilities computed here (by hand, and from a numpy softmax of
random logits).

Where raysweep departs from the official code on purpose, the test says so and checks the
departure: BUCC's threshold never cuts inside a tie (`bucc_optimize` can report an F1 that no
threshold gives), and it is chosen on dev and applied to test.
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

from raysweep.tasks import DataContext, get_task, metrics
from raysweep.tasks.base import (
    Answer,
    Candidate,
    ChoiceExample,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    Split,
    TaggingExample,
    TextExample,
)
from raysweep.tasks.encoding import Ranking, RetrievalEncoder
from raysweep.tasks.encoding.retrieval import Mined
from raysweep.tasks.retrieval_data import DevSentence

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


def ref_bucc_optimize_to_end(candidate2score, gold):
    """`bucc_optimize` reads items[i + 1] and fails when the best cut keeps every candidate: a
    wrong -inf candidate keeps it in range, and gives raysweep's threshold for that case."""
    return ref_bucc_optimize({**candidate2score, ('<end>', '<end>'): float('-inf')}, gold)


def ref_bucc_extract(cand2score, th):
    bitexts = []
    for (src, trg), score in cand2score.items():
        if score >= th:
            bitexts.append(src + '\t' + trg)
    return bitexts


# LASER's mining as XTREME ships it (mine_bitext, mode 'mine', retrieval 'max', margin 'ratio',
# dist 'cosine', no shift), with faiss' exhaustive IndexFlatIP search written in numpy and the
# files as lists of lines.

def ref_knnCPU(x, y, k):
    # x: query, y: database; idx = faiss.IndexFlatIP(dim); idx.add(y); idx.search(x, k)
    sim = x.dot(y.T)
    ind = np.argsort(-sim, axis=1, kind='stable')[:, :k]
    return np.take_along_axis(sim, ind, axis=1), ind


def ref_score(x, y, fwd_mean, bwd_mean, margin):
    return margin(x.dot(y), (fwd_mean + bwd_mean) / 2)


def ref_score_candidates(x, y, candidate_inds, fwd_mean, bwd_mean, margin):
    scores = np.zeros(candidate_inds.shape)
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            k = candidate_inds[i, j]
            scores[i, j] = ref_score(x[i], y[k], fwd_mean[i], bwd_mean[k], margin)
    return scores


def ref_text_load_unify(lines):
    inds = []
    sents = []
    sent2ind = {}
    for line in lines:
        new_ind = len(sent2ind)
        inds.append(sent2ind.setdefault(line, new_ind))
        if inds[-1] == new_ind:
            sents.append(line[:-1])
    return inds, sents


def ref_unique_embeddings(emb, ind):
    aux = {j: i for i, j in enumerate(ind)}
    return emb[[aux[i] for i in range(len(aux))]]


def ref_mine_bitext(x, y, src_lines, trg_lines, threshold=0, neighborhood=4):
    src_inds, src_sents = ref_text_load_unify(src_lines)
    trg_inds, trg_sents = ref_text_load_unify(trg_lines)
    x = ref_unique_embeddings(x, src_inds)
    y = ref_unique_embeddings(y, trg_inds)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)  # faiss.normalize_L2
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    x2y_sim, x2y_ind = ref_knnCPU(x, y, min(y.shape[0], neighborhood))
    x2y_mean = x2y_sim.mean(axis=1)
    y2x_sim, y2x_ind = ref_knnCPU(y, x, min(x.shape[0], neighborhood))
    y2x_mean = y2x_sim.mean(axis=1)
    margin = lambda a, b: a / b  # noqa: E731 - as the original
    fout = []
    fwd_scores = ref_score_candidates(x, y, x2y_ind, x2y_mean, y2x_mean, margin)
    bwd_scores = ref_score_candidates(y, x, y2x_ind, y2x_mean, x2y_mean, margin)
    fwd_best = x2y_ind[np.arange(x.shape[0]), fwd_scores.argmax(axis=1)]
    bwd_best = y2x_ind[np.arange(y.shape[0]), bwd_scores.argmax(axis=1)]
    indices = np.stack((np.concatenate((np.arange(x.shape[0]), bwd_best)),
                        np.concatenate((fwd_best, np.arange(y.shape[0])))), axis=1)
    scores = np.concatenate((fwd_scores.max(axis=1), bwd_scores.max(axis=1)))
    seen_src, seen_trg = set(), set()
    for i in np.argsort(-scores):
        src_ind, trg_ind = indices[i]
        if not src_ind in seen_src and not trg_ind in seen_trg:  # noqa: E713
            seen_src.add(src_ind)
            seen_trg.add(trg_ind)
            if scores[i] > threshold:
                fout.append('\t'.join([str(scores[i]), src_sents[src_ind], trg_sents[trg_ind]]))
    return fout


def ref_read_sent2id(sentence_lines, id_lines):
    repeated = set()
    sent2id = {}
    ids = [l.strip() for l in id_lines]
    sentences = [l.strip() for l in sentence_lines]
    for id, sent in zip(ids, sentences):
        if sent in sent2id:
            repeated.add(sent)
        else:
            sent2id[sent] = id
    for sent in repeated:
        del sent2id[sent]
    return sent2id


def ref_read_candidate2score(candidate_lines, src_lines, trg_lines, src_id_lines, trg_id_lines):
    src_sent2id = ref_read_sent2id(src_lines, src_id_lines)
    trg_sent2id = ref_read_sent2id(trg_lines, trg_id_lines)
    candidate2score = {}
    for line in candidate_lines:
        score, src, trg = line.split('\t')
        score = float(score)
        src = src.strip()
        trg = trg.strip()
        if src in src_sent2id and trg in trg_sent2id:
            src_id = src_sent2id[src]
            trg_id = trg_sent2id[trg]
            score = max(score, candidate2score.get((src_id, trg_id), score))
            candidate2score[(src_id, trg_id)] = score
    return candidate2score


def ref_bucc_candidates(sources, targets, emb):
    """`run_bucc2018.sh` (cut -f1 / -f2 of the id<TAB>sentence files) + mine_bitext +
    read_candidate2score; `emb[text]` is a sentence's embedding."""
    src_lines = [t + '\n' for _, t in sources]
    trg_lines = [t + '\n' for _, t in targets]
    x = np.stack([emb[t] for _, t in sources])
    y = np.stack([emb[t] for _, t in targets])
    cands = ref_mine_bitext(x, y, src_lines, trg_lines)
    return ref_read_candidate2score(cands, src_lines, trg_lines, [i for i, _ in sources],
                                    [i for i, _ in targets])


# --- XTREME third_party/evaluate_retrieval.py (task tatoeba) -------------------------------------

def ref_similarity_search(x, y, dim, normalize=False):
    # faiss.IndexFlatL2(dim); idx.add(x); idx.search(y, 1): for each y, the nearest x
    if normalize:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        y = y / np.linalg.norm(y, axis=1, keepdims=True)
    dist = ((y[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return dist.argmin(axis=1)[:, None]


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
def test_bucc_f1_without_ties_is_xtreme(seed):
    """Untied scores on a validation split (scored at its own optimal threshold, as XTREME prints
    for dev): raysweep's threshold search and the official `bucc_optimize` agree."""
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
    split = Split("bucc", "validation", "de", tuple(examples))
    ours = metrics.bucc_f1(split, preds)
    threshold = ref_bucc_optimize(cand2score, set(gold))
    ref = ref_bucc_f1(gold, ref_bucc_extract(cand2score, threshold))
    for k in ("f1", "precision", "recall"):
        assert abs(ours[k] * 100 - ref[k]) < TOL
    assert 0 < ours["f1"] < 1
    with pytest.raises(ValueError, match="chosen on dev"):  # test without dev: refused
        metrics.bucc_f1(Split("bucc", "test", "de", tuple(examples)), preds)


def _dev_carrying_split(test, dev_sources, dev_targets):
    """A BUCC test split as the loader builds it: test sources as examples, the English pool,
    and the dev sentences (with their gold) riding along as `DevSentence`s."""
    pool = [Candidate(t, "x") for t in sorted({t for _, ts in test for t in ts} | {"en-pool"})]
    pool += [DevSentence(sid, "x", "source", tuple(rel)) for sid, rel in dev_sources]
    pool += [DevSentence(tid, "x", "target") for tid in dev_targets]
    return Split("bucc", "test", "de", tuple(RetrievalExample(s, "x", tuple(r)) for s, r in test),
                 candidates=tuple(pool))


def _mined(test_c2s, dev_c2s):
    out = Mined(Ranking([t], [v]) for (_, t), v in test_c2s.items())
    out.dev = dict(dev_c2s)
    return out


def test_bucc_threshold_chosen_on_dev_applied_to_test():
    """XTREME's protocol: bucc_optimize on dev, bucc_extract with that threshold on test. Here
    the test split's own optimum (0.8) is not what the dev threshold gives (2/3)."""
    dev_c2s = {("d1", "e1"): 0.9, ("d2", "e2"): 0.7, ("d3", "e9"): 0.6, ("d4", "e8"): 0.3}
    dev_gold = {"d1\te1", "d2\te2"}
    test_c2s = {("t1", "f1"): 0.95, ("t2", "f9"): 0.62, ("t3", "f3"): 0.5, ("t4", "f8"): 0.2}
    test_gold = ["t1\tf1", "t3\tf3"]
    th = ref_bucc_optimize(dev_c2s, dev_gold)
    ref = ref_bucc_f1(test_gold, ref_bucc_extract(test_c2s, th))
    on_test = ref_bucc_f1(test_gold, ref_bucc_extract(test_c2s,
                                                       ref_bucc_optimize(test_c2s, set(test_gold))))
    assert abs(ref["f1"] - on_test["f1"]) > 10  # the case tells the two protocols apart
    split = _dev_carrying_split([("t1", ["f1"]), ("t2", []), ("t3", ["f3"]), ("t4", [])],
                                [("d1", ["e1"]), ("d2", ["e2"]), ("d3", []), ("d4", [])],
                                ["e1", "e2", "e8", "e9"])
    ours = metrics.bucc_f1(split, _mined(test_c2s, dev_c2s))
    for k in ("f1", "precision", "recall"):
        assert abs(ours[k] * 100 - ref[k]) < TOL


def _achievable_best(cand2score, gold):
    """Every F1 a threshold can give (`score >= threshold` takes all of a tie), the best one."""
    best = 0.0
    for th in sorted(set(cand2score.values()), reverse=True):
        best = max(best, ref_bucc_f1(sorted(gold), ref_bucc_extract(cand2score, th))["f1"])
    return best


def test_bucc_ties_are_never_split():
    """`bucc_optimize` walks the pairs one by one, so it can cut inside a group of equal scores:
    here it reports F1 100 after B (B before C, D, E of the same score 0.8) and returns the
    threshold 0.8, which `bucc_extract` (>=) applies to all four: F1 57. raysweep only cuts
    between distinct scores: F1 67 at 0.85, the best any threshold gives."""
    c2s = {("A", "a"): 0.9, ("B", "b"): 0.8, ("C", "x"): 0.8, ("D", "y"): 0.8, ("E", "z"): 0.8,
           ("F", "w"): 0.1}
    gold = {"A\ta", "B\tb"}
    official_th = ref_bucc_optimize(c2s, gold)
    official = ref_bucc_f1(sorted(gold), ref_bucc_extract(c2s, official_th))
    assert official_th == 0.8 and round(official["f1"]) == 57
    best = _achievable_best(c2s, gold)
    assert round(best) == 67
    # on a validation split (its own threshold), and carried as dev for a test split
    split = Split("bucc", "validation", "de", tuple(
        RetrievalExample(s, "x", (t,) if f"{s}\t{t}" in gold else ()) for s, t in c2s))
    ours = metrics.bucc_f1(split, [Ranking([t], [v]) for (_, t), v in c2s.items()])
    assert abs(ours["f1"] * 100 - best) < TOL
    assert metrics.bucc_threshold(c2s, {tuple(g.split("\t")) for g in gold}) == \
        pytest.approx(0.85)
    test_c2s = {("t1", "f1"): 0.95, ("t2", "f2"): 0.82, ("t3", "f9"): 0.7}
    test_gold = ["t1\tf1", "t2\tf2"]
    dev = _dev_carrying_split([("t1", ["f1"]), ("t2", ["f2"]), ("t3", [])],
                              [(s, [t] if f"{s}\t{t}" in gold else []) for s, t in c2s],
                              sorted({t for _, t in c2s}))
    ours = metrics.bucc_f1(dev, _mined(test_c2s, c2s))
    ref = ref_bucc_f1(test_gold, ref_bucc_extract(test_c2s, 0.85))  # the tie-free threshold
    official = ref_bucc_f1(test_gold, ref_bucc_extract(test_c2s, official_th))
    assert abs(ours["f1"] * 100 - ref["f1"]) < TOL and abs(ref["f1"] - official["f1"]) > 10


class _Tok:
    """Stands in for a tokenizer: the tests below set every embedding from the text."""

    def __call__(self, text, truncation=True, max_length=8, return_special_tokens_mask=True):
        return {"input_ids": [1], "special_tokens_mask": [0]}


def _embed(split, features, emb):
    """Logits as the head would return them: each feature's text's embedding (one batch)."""
    def text(f):
        return (split.examples[f["example_index"]].query if f["side"] == "query"
                else split.candidates[f["candidate_index"]].text)
    return [torch.tensor(np.stack([emb[text(f)] for f in features]))]


def _bucc_files(root, name, sources, targets, gold):
    (root / "bucc").mkdir(exist_ok=True)
    for ext, rows in (("de", sources), ("en", targets)):
        (root / "bucc" / f"de-en.{name}.{ext}").write_text(
            "".join(f"{i}\t{t}\n" for i, t in rows), encoding="utf-8")
    (root / "bucc" / f"de-en.{name}.gold").write_text("".join(f"{g}\n" for g in gold))


def _bucc_data(rng, prefix, n_gold, n_src_only, n_trg_only, noise):
    """Sentences with embeddings: gold pairs close (noise), the rest random; one source text
    is repeated (two ids, so read_sent2id drops it) and one source has two translations."""
    dim = 6

    def vec(v):  # float32 values (what the head returns), held in float64 for the reference
        return np.asarray(v, dtype=np.float32).astype(np.float64)

    emb, sources, targets, gold = {}, [], [], []
    for i in range(n_gold):
        s, t = f"{prefix}-src-{i}", f"{prefix}-trg-{i}"
        emb[s] = vec(rng.standard_normal(dim))
        emb[t] = vec(emb[s] + noise * rng.standard_normal(dim))
        sources.append((f"de-{prefix}{i:06d}", s))
        targets.append((f"en-{prefix}{i:06d}", t))
        gold.append(f"de-{prefix}{i:06d}\ten-{prefix}{i:06d}")
    for i in range(n_src_only):
        emb[f"{prefix}-lone-src-{i}"] = vec(rng.standard_normal(dim))
        sources.append((f"de-{prefix}9{i:05d}", f"{prefix}-lone-src-{i}"))
    for i in range(n_trg_only):
        emb[f"{prefix}-lone-trg-{i}"] = vec(rng.standard_normal(dim))
        targets.append((f"en-{prefix}9{i:05d}", f"{prefix}-lone-trg-{i}"))
    sources.append((f"de-{prefix}800000", sources[0][1]))  # a repeated sentence
    gold.append(f"de-{prefix}800000\ten-{prefix}{0:06d}")
    gold.append(f"de-{prefix}{1:06d}\ten-{prefix}{2:06d}")  # two translations of one source
    return emb, sources, targets, gold


@pytest.mark.parametrize("seed", SEEDS)
def test_bucc_end_to_end_is_xtreme_mining_with_dev_threshold(seed, tmp_path):
    """Loader -> encoder -> metric on BUCC files with dev and test, against the official chain:
    mine_bitext on dev and on test, read_candidate2score, bucc_optimize on dev, bucc_extract on
    test, bucc_f1. Untied random scores, so bucc_optimize's tie flaw plays no part."""
    rng = np.random.default_rng(seed)
    dev_emb, dev_src, dev_trg, dev_gold = _bucc_data(rng, "d", 25, 15, 10, 0.6)
    test_emb, test_src, test_trg, test_gold = _bucc_data(rng, "t", 30, 20, 10, 0.9)
    _bucc_files(tmp_path, "dev", dev_src, dev_trg, dev_gold)
    _bucc_files(tmp_path, "test", test_src, test_trg, test_gold)
    split = get_task("bucc").load("test", "de", DataContext(data_dir=tmp_path))
    features = RetrievalEncoder.encode(split, _Tok(), 8)
    emb = {**dev_emb, **test_emb}
    preds = RetrievalEncoder.predict(split, features, _embed(split, features, emb))
    ours = metrics.bucc_f1(split, preds)

    dev_c2s = ref_bucc_candidates(dev_src, dev_trg, dev_emb)
    test_c2s = ref_bucc_candidates(test_src, test_trg, test_emb)
    assert {(s[len("dev/"):], t[len("dev/"):]): v for (s, t), v in preds.dev.items()} == \
        pytest.approx(dev_c2s, abs=1e-9)
    assert {(ex.id, p[0]): p.scores[0] for ex, p in zip(split.examples, preds) if p} == \
        pytest.approx(test_c2s, abs=1e-9)
    ref = ref_bucc_f1(test_gold, ref_bucc_extract(
        test_c2s, ref_bucc_optimize_to_end(dev_c2s, set(dev_gold))))
    for k in ("f1", "precision", "recall"):
        assert abs(ours[k] * 100 - ref[k]) < TOL
    on_test = ref_bucc_f1(test_gold, ref_bucc_extract(
        test_c2s, ref_bucc_optimize_to_end(test_c2s, set(test_gold))))
    assert abs(ours["f1"] * 100 - on_test["f1"]) > 1e-6  # choosing on test would differ
    assert 0 < ours["f1"] < 1


def test_tatoeba_searches_in_xtreme_direction(tmp_path):
    """XTREME's evaluate_retrieval.py (tatoeba) indexes the non-English sentences and searches
    them with the English ones. Here a non-English "hub" sentence is the nearest neighbour of
    both English sentences: English queries get 1 of 2 right, non-English queries 2 of 2."""
    deu, eng = ["Ich habe Hunger.", "Wo ist der Bahnhof?"], ["I am hungry.", "Where is it?"]
    (tmp_path / "tatoeba").mkdir()
    (tmp_path / "tatoeba" / "tatoeba.deu-eng.deu").write_text("\n".join(deu) + "\n")
    (tmp_path / "tatoeba" / "tatoeba.deu-eng.eng").write_text("\n".join(eng) + "\n")
    e0, e1 = np.array([1.0, 0, 0]), np.array([0.6, 0.8, 0])
    g0, g1 = np.array([0.95, 0.31, 0]), np.array([0, 0.5, 0.866])
    emb = {eng[0]: e0, eng[1]: e1, deu[0]: g0, deu[1]: g1}
    x, y = np.stack([g0, g1]), np.stack([e0, e1])  # src (deu), tgt (eng)
    labels = [str(i) for i in range(2)]
    ref = ref_xtreme_accuracy(labels, [str(p[0]) for p in ref_similarity_search(x, y, 3, True)])
    reverse = ref_xtreme_accuracy(labels,
                                  [str(p[0]) for p in ref_similarity_search(y, x, 3, True)])
    assert (ref["accuracy"], reverse["accuracy"]) == (50.0, 100.0)
    split = get_task("tatoeba").load("test", "de", DataContext(data_dir=tmp_path))
    features = RetrievalEncoder.encode(split, _Tok(), 8)
    preds = RetrievalEncoder.predict(split, features, _embed(split, features, emb))
    ours = metrics.retrieval_accuracy(split, preds)
    assert ours["accuracy"] * 100 == pytest.approx(ref["accuracy"], abs=TOL)


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


# XTREME-R: each task's mean over languages, QA as (EM + F1) / 2, mean over tasks and per group:
# evaluate.py's `evaluate` and its display logic, transcribed, with XTREME-R's task groups as the
# paper's Table 1 has them (evaluate.py itself lists retrieval as tatoeba + mewslix only, and
# calls "structured" "tagging").
XTREME_R_GROUP2TASK = {
    "classification": ["xnli", "xcopa"],
    "structured": ["udpos", "wikiann"],
    "qa": ["xquad", "mlqa", "tydiqa"],
    "retrieval": ["tatoeba", "mewslix", "lareqa"],
}


def ref_xtreme_r(per_task_metrics, task2langs, group2task=XTREME_R_GROUP2TASK):
    """per_task_metrics[task][metric][lang] -> evaluate.py's overall_scores (all_task and the
    group means, each only when all of its tasks are there); a task present without one of its
    languages raises, as a missing prediction file does there."""
    detailed_scores = {}
    for task, langs in task2langs.items():
        if task in per_task_metrics:
            score = collections.defaultdict(dict)
            for lg in langs:
                if lg not in per_task_metrics[task][next(iter(per_task_metrics[task]))]:
                    raise FileNotFoundError(f'{task}/test-{lg} is not available.')
                for metric in per_task_metrics[task]:
                    score[metric][lg] = per_task_metrics[task][metric][lg]
            avg_score = {}
            for m in score:
                avg_score[f'avg_{m}'] = sum(score[m].values()) / len(score[m])
            score.update(avg_score)
            if task in group2task['qa']:
                score['avg_metric'] = (score['avg_exact_match'] + score['avg_f1']) / 2
            else:
                score['avg_metric'] = score['avg_score']
            detailed_scores[task] = dict(score)
    overall_scores = {}
    all_tasks = set(task2langs.keys())
    available_tasks = set(detailed_scores.keys())
    if all_tasks == available_tasks:
        overall_scores['all_task'] = sum(detailed_scores[task]['avg_metric']
                                         for task in all_tasks) / len(all_tasks)
    for group, group_tasks in group2task.items():
        if not set(group_tasks) - available_tasks:
            overall_scores[group] = sum(detailed_scores[task]['avg_metric']
                                        for task in group_tasks) / len(group_tasks)
    return overall_scores


def _scores(tasks, rng, drop=()):
    """Random per-language metrics for `tasks` in every registered language (but `drop`), as
    evaluate.py's raw metrics and as raysweep's per-language primary scores."""
    raw, primary_scores = {}, {}
    for task in tasks:
        qa = task in XTREME_R_GROUP2TASK["qa"]
        langs = [lang for lang in get_task(task).languages if (task, lang) not in drop]
        raw[task] = {m: {lang: rng.random() for lang in langs}
                     for m in (("exact_match", "f1") if qa else ("score",))}
        primary_scores[task] = {
            lang: (metrics.primary("squad", {"em": raw[task]["exact_match"][lang],
                                             "f1": raw[task]["f1"][lang]})
                   if qa else raw[task]["score"][lang]) for lang in langs}
    return raw, primary_scores


TASK2LANGS = {t: get_task(t).languages for ts in XTREME_R_GROUP2TASK.values() for t in ts}


def test_xtreme_r_aggregate_complete_is_evaluate_py():
    rng = random.Random(0)
    raw, primary_scores = _scores(TASK2LANGS, rng)
    primary_scores["pawsx"] = {"de": 1.0}  # not an XTREME-R task: ignored
    primary_scores["bucc"] = {"de": 1.0}
    ours = metrics.xtreme_r_aggregate(primary_scores)
    ref = ref_xtreme_r(raw, TASK2LANGS)
    assert set(ours) == {"xtreme_r", "xtreme_r/classification", "xtreme_r/structured",
                         "xtreme_r/qa", "xtreme_r/retrieval"}
    assert abs(ours["xtreme_r"] - ref["all_task"]) < TOL
    for group in XTREME_R_GROUP2TASK:
        assert abs(ours[f"xtreme_r/{group}"] - ref[group]) < TOL
    assert all(metrics.is_aggregate(name) for name in ours)


def test_xtreme_r_aggregate_partial():
    """Where evaluate.py shows no overall (or no group) score, raysweep reports a labelled partial
    one, never `xtreme_r`; a complete group keeps its name; a task scored in some of its
    languages (evaluate.py: an error) makes its aggregates partial and says how many."""
    rng = random.Random(1)
    raw, scores = _scores(["xnli", "udpos", "wikiann", "xquad"], rng)
    ref = ref_xtreme_r(raw, TASK2LANGS)
    assert set(ref) == {"structured"}
    ours = metrics.xtreme_r_aggregate(scores)
    task_mean = {t: sum(v.values()) / len(v) for t, v in scores.items()}
    assert ours == pytest.approx({
        "xtreme_r_partial[xnli,udpos,wikiann,xquad]": sum(task_mean.values()) / 4,
        "xtreme_r_partial/classification[xnli]": task_mean["xnli"],
        "xtreme_r/structured": ref["structured"],
        "xtreme_r_partial/qa[xquad]": task_mean["xquad"]}, abs=TOL)
    raw, scores = _scores(TASK2LANGS, rng, drop={("xnli", "sw"), ("xnli", "ur")})
    with pytest.raises(FileNotFoundError):
        ref_xtreme_r(raw, TASK2LANGS)
    ours = metrics.xtreme_r_aggregate(scores)
    names = ("xnli(13of15),xcopa,udpos,wikiann,xquad,mlqa,tydiqa,tatoeba,mewslix,lareqa")
    assert set(ours) == {f"xtreme_r_partial[{names}]",
                         "xtreme_r_partial/classification[xnli(13of15),xcopa]",
                         "xtreme_r/structured", "xtreme_r/qa", "xtreme_r/retrieval"}
    assert all(metrics.is_aggregate(name) for name in ours)


def test_synthetic_benchmark_aggregates_apart():
    """The synthetic analogues are their own benchmark (xtreme_r_syn), never averaged with real
    tasks; tiny_scaling's one target gives a labelled partial aggregate."""
    syn = {"syn_xnli": {"de": 0.5, "en": 0.7}}
    langs = {"syn_xnli": ("de", "en"), "syn_xcopa": ("de", "en"), "syn_ner": ("de", "en"),
             "syn_xquad": ("de", "en"), "syn_tatoeba": ("de",)}
    assert metrics.xtreme_r_aggregate(syn, languages=langs) == pytest.approx({
        "xtreme_r_syn_partial[syn_xnli]": 0.6,
        "xtreme_r_syn_partial/classification[syn_xnli]": 0.6})
    full = {t: {lang: 0.1 * (k + 1) for lang in ls} for k, (t, ls) in enumerate(langs.items())}
    both = metrics.xtreme_r_aggregate({**full, "xnli": {"de": 0.9}, "syn_xnli_translate":
                                       {"de": 1.0}}, languages={**langs, "xnli": ("de",)})
    assert both == pytest.approx({
        "xtreme_r_syn": 0.3, "xtreme_r_syn/classification": 0.15, "xtreme_r_syn/structured": 0.3,
        "xtreme_r_syn/qa": 0.4, "xtreme_r_syn/retrieval": 0.5,
        "xtreme_r_partial[xnli]": 0.9, "xtreme_r_partial/classification[xnli]": 0.9})
