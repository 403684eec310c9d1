"""The synthetic multilingual world: determinism, balance, disjoint splits, the tokenizer, the
registered tasks, and a small version of the transfer figure 1 (zero-shot above chance)."""

from __future__ import annotations

import collections
import time

import pytest
import torch

from raysweep.data import DEFAULT_WORLD, build_tokenizer, get_world, normalize_world
from raysweep.tasks import synthetic_examples as gen
from raysweep.data.world import World
from raysweep.tasks.base import (
    ChoiceExample,
    DataContext,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    TaggingExample,
    TaskDataError,
    TextExample,
)
from raysweep.tasks.registry import all_tasks, get_task

SMALL = {"train_size": 120, "dev_size": 30, "test_size": 30, "corpus_sentences": 200,
         "retrieval_pool": 30}


def _syn_tasks():
    return {n: t for n, t in all_tasks().items() if n.startswith("syn_")}


def test_defaults_and_unknown_key():
    cfg = normalize_world({})
    assert cfg == normalize_world(None) == normalize_world(DEFAULT_WORLD)
    with pytest.raises(ValueError, match="unknown world key 'n_langs'.*allowed keys:.*seed"):
        normalize_world({"n_langs": 3})
    with pytest.raises(ValueError, match="unknown language key 'wordorder'"):
        normalize_world({"languages": [{"code": "xa", "wordorder": "SOV"}]})


def test_world_is_deterministic_for_a_seed():
    a, b = World({"seed": 3}), World({"seed": 3})
    assert a.vocab == b.vocab
    assert {c: l.forms for c, l in a.languages.items()} == {c: l.forms for c, l in
                                                           b.languages.items()}
    c = World({"seed": 4})
    assert a.vocab != c.vocab
    ctx = DataContext(world=normalize_world({"seed": 3, **SMALL}))
    for name in ("syn_xnli", "syn_xquad", "syn_corpus"):
        task = get_task(name)
        split = "train" if name == "syn_corpus" else "test"
        lang = task.languages[-1]
        x = task.load(split, lang, ctx).examples
        gen._items_cached.cache_clear()
        from raysweep.tasks import synthetic
        synthetic._cached_split.cache_clear()
        y = task.load(split, lang, ctx).examples
        assert x == y


def test_languages_have_distances_and_knobs():
    w = get_world({})
    assert w.codes[0] == "en" and len(w.codes) == DEFAULT_WORLD["n_languages"]
    assert w.distance["en"] == 0.0
    d = [w.distance[c] for c in w.codes]
    assert all(0 < x <= 1 for x in d[1:])
    assert d == sorted(d), "the default languages are drawn in order of distance"
    orders = {w.languages[c].order for c in w.codes}
    assert len(orders) >= 3
    # anchors: shared lexemes use the English token; numbers and punctuation always do
    for c in w.codes[1:]:
        lang = w.languages[c]
        for key in lang.shared:
            assert lang.forms[key][0] == w.languages["en"].forms[key][0]
        assert {k for k, lx in w.lexicon.items() if lx.pos in ("num", "punct")} <= lang.shared
        frac = sum(1 for k in lang.shared if w.lexicon[k].pos == "noun") / len(w.all_nouns)
        assert abs(frac - lang.anchor) < 0.25


@pytest.mark.parametrize("name", ["syn_xnli", "syn_nli_en", "syn_hypernym", "syn_random",
                                  "syn_lexparity", "syn_xcopa", "syn_script", "syn_antonym"])
def test_label_balanced(name):
    task = get_task(name)
    for split in task.splits:
        s = task.load(split, "en", DataContext(world=normalize_world(SMALL)))
        counts = collections.Counter(ex.label for ex in s.examples)
        assert len(counts) == task.num_labels
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)


@pytest.mark.parametrize("name", ["syn_xnli", "syn_nli_en", "syn_xcopa", "syn_ner", "syn_xquad",
                                  "syn_hypernym", "syn_random", "syn_mlm"])
def test_disjoint_splits(name):
    task = get_task(name)
    ctx = DataContext(world=normalize_world(SMALL))
    seen: dict[str, str] = {}
    for split in task.splits:
        for ex in task.load(split, "en", ctx).examples:
            key = repr({k: v for k, v in ex.__dict__.items() if k not in ("id", "label")})
            assert seen.setdefault(key, split) == split, f"{name}: {key} in {seen[key]} and {split}"


def test_intermediate_disjoint_from_its_target():
    ctx = DataContext(world=normalize_world(SMALL))
    xnli = {(e.text_a, e.text_b) for sp in ("validation", "test")
            for e in get_task("syn_xnli").load(sp, "en", ctx).examples}
    nli = {(e.text_a, e.text_b) for e in get_task("syn_nli_en").load("train", "en", ctx).examples}
    assert not xnli & nli


def test_tokenizer_ids_and_round_trip():
    tok = build_tokenizer({})
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.sep_token_id is not None and tok.unk_token_id is not None
    assert len(tok) == len(get_world({}).vocab)
    ex = get_task("syn_xnli").load("test", "xc", DataContext()).examples[0]
    single = tok(ex.text_a)["input_ids"]
    assert single[0] == 1 and single[-1] == 2 and 4 not in single  # no <unk>
    assert tok.decode(single, skip_special_tokens=True) == ex.text_a
    pair = tok(ex.text_a, ex.text_b, truncation=True, max_length=64)
    n_a = len(ex.text_a.split())
    assert pair["input_ids"][0] == 1 and pair["input_ids"][n_a + 1] == tok.sep_token_id
    assert pair["input_ids"][-1] == 2
    assert len(tok(ex.text_a, ex.text_b, truncation=True, max_length=8)["input_ids"]) == 8
    enc = tok(ex.text_a, return_offsets_mapping=True)
    words = ex.text_a.split()
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        wid = enc.word_ids()[i]
        if wid is not None:
            assert ex.text_a[s:e] == words[wid]
    # every token of every language's corpus is in the vocabulary
    for lang in get_task("syn_corpus").languages:
        text = get_task("syn_corpus").load("train", lang, DataContext(
            world=normalize_world(SMALL))).examples[0].text
        assert tok.unk_token_id not in tok(text)["input_ids"]


EXAMPLE_TYPES = {"seq_cls": PairExample, "multiple_choice": ChoiceExample,
                 "token_cls": TaggingExample, "span_qa": SpanQAExample,
                 "retrieval": RetrievalExample, "causal_lm": TextExample}


def test_every_task_loads_every_declared_split_and_language():
    ctx = DataContext(world=normalize_world(SMALL))
    tasks = _syn_tasks()
    roles = collections.Counter(r for t in tasks.values() for r in t.roles)
    assert roles["pretrain"] >= 1 and roles["intermediate"] >= 6 + 2
    for name, task in tasks.items():
        translated = name in ("syn_corpus", "syn_mlm") or name.endswith("_translate")
        for split in task.splits:
            for lang in task.languages:
                if split == "train" and lang != "en" and not translated:
                    with pytest.raises(TaskDataError, match="English only"):
                        task.load(split, lang, ctx)
                    continue
                s = task.load(split, lang, ctx)
                assert len(s) > 0, (name, split, lang)
                assert all(isinstance(e, EXAMPLE_TYPES[task.head]) for e in s.examples)
                if task.head == "retrieval":
                    pool = {c.id for c in s.candidates}
                    assert all(set(e.relevant) <= pool for e in s.examples)
                if task.head == "span_qa":
                    for e in s.examples:
                        a = e.answers[0]
                        assert e.context[a.start:a.start + len(a.text)] == a.text
                if task.head == "token_cls":
                    for e in s.examples:
                        assert len(e.words) == len(e.tags)
                        assert set(e.tags) <= set(task.label_names)
                if task.head in ("seq_cls", "multiple_choice") and task.num_labels:
                    assert all(0 <= e.label < task.num_labels for e in s.examples)
    with pytest.raises(TaskDataError):
        get_task("syn_xnli").load("test", "zz", ctx)


def test_dev_test_are_parallel_across_languages():
    ctx = DataContext(world=normalize_world(SMALL))
    task = get_task("syn_xnli")
    en = task.load("test", "en", ctx).examples
    for lang in task.languages[1:]:
        xx = task.load("test", lang, ctx).examples
        assert [e.label for e in xx] == [e.label for e in en]
        assert [e.text_a for e in xx] != [e.text_a for e in en]


def test_figure1_small_zero_shot_above_chance():
    """Small version of bench/transfer.py figure 1: pretrain the 0.12M model on the default
    world (400 steps), fine-tune on English syn_xnli (300 steps), evaluate zero-shot on 200
    test examples per language. Measured (1 thread, seed 0, deterministic): 20 s alone, up to
    60 s on a busy machine; English 0.985, zero-shot mean over the five other languages 0.456
    (chance 0.333; the bench's three seeds at 300 examples: 0.42-0.45), closest language xa
    0.65. The 0.02M model stays at 0.34-0.39 under the same recipe, so this can fail."""
    from raysweep.data.experiment import transfer_run

    torch.set_num_threads(1)
    t = time.perf_counter()
    r = transfer_run("llama-tiny-s", {}, seed=0, limit=200)
    assert r.scores["en"] > 0.7, r.scores
    assert r.zero_shot > 0.39, r.scores  # chance 1/3
    assert r.scores["xa"] > 0.45, r.scores
    assert time.perf_counter() - t < 180  # ~30 s alone; generous for shared CPUs
