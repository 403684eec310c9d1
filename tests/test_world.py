"""The synthetic multilingual world, checked against its definition (`raysweep/data/world.py`,
`raysweep/tasks/synthetic_examples.py`): the seeding rule, the language schedule and distance
formula, word order, cognate (anchor) rates within binomial bounds, exact label balance, labels
that mean what each task says, disjoint splits, parallel dev/test sets, the tokenizer, and a
small version of the transfer figure 1 (zero-shot above chance).

Expected values are computed here from the rules the generator documents, not read off its
output."""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep.data import DEFAULT_WORLD, build_tokenizer, get_world, normalize_world
from raysweep.data.grammar import NP, Clause, kendall_order_distance, language_distance
from raysweep.data.world import World
from raysweep.tasks import synthetic_examples as gen
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
# the default world's lexicon, counted from DEFAULT_WORLD: 6 classes x (6 nouns + 2 adjectives
# + 1 class word), 3 groups x 2 verb pairs x 2, 8 person names + 6 places + 3 ambiguous names,
# 8 function words, 3 punctuation marks, 8 digits
N_LEXEMES = 6 * (6 + 2 + 1) + 3 * 2 * 2 + 8 + 6 + 3 + 8 + 3 + 8
CONTENT = ("noun", "cls", "adj", "verb", "func")  # shared with probability `anchor`
INFLECTED = ("noun", "verb", "adj")  # get two inflected variants where not shared


def _syn_tasks():
    return {n: t for n, t in all_tasks().items() if n.startswith("syn_")}


def _rng(seed, *purpose):
    """The documented seeding rule, written out independently: sha256 of the JSON list
    [seed, *purpose], its first 8 bytes little-endian seed numpy's default generator."""
    digest = hashlib.sha256(json.dumps([seed, *purpose]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


_BACK: dict[tuple[int, str], dict[str, str]] = {}


def _lexemes(world, code, text):
    """Lexeme keys of a rendered text in language `code` (every token must be one of its forms;
    forms are unique within a language)."""
    back = _BACK.get((id(world), code))
    if back is None:
        back = _BACK[id(world), code] = {}
        for key, forms in world.languages[code].forms.items():
            for f in forms:
                assert back.setdefault(f, key) == key, (code, f)
    return [back[t] for t in text.split()]


def _subject_class(world, keys):
    """English is SVO: the subject's head is the first noun, class word or person name."""
    head = next(k for k in keys if world.lexicon[k].pos in ("noun", "cls", "name"))
    return world.lexicon[head].cls


def _verb(world, keys):
    return next(k for k in keys if world.lexicon[k].pos == "verb")


def test_defaults_and_unknown_key():
    cfg = normalize_world({})
    assert cfg == normalize_world(None) == normalize_world(DEFAULT_WORLD)
    with pytest.raises(ValueError, match="unknown world key 'n_langs'.*allowed keys:.*seed"):
        normalize_world({"n_langs": 3})
    with pytest.raises(ValueError, match="unknown language key 'wordorder'"):
        normalize_world({"languages": [{"code": "xa", "wordorder": "SOV"}]})


@pytest.mark.parametrize("seed", [0, 3])
def test_first_draws_follow_the_seeding_rule(seed):
    """Known outputs for a seed, recomputed from the rules: the lexicon's stream draws each verb
    pair's object class, then each verb's script result (one of the two verbs of its group that
    are neither it nor its antonym); the first lexeme (noun n0_0) takes the first English form,
    three consonant-vowel syllables; in xa it is shared with probability 0.8, else drawn
    from the wider consonant set with the suffix letter 'a'."""
    w = World({"seed": seed})
    r = _rng(seed, "lexicon")
    for g in range(3):
        for p in range(2):
            oc = int(r.integers(6))
            assert w.obj_class[f"v{g}_{p}a"] == w.obj_class[f"v{g}_{p}b"] == oc
    for g in range(3):
        verbs = [f"v{g}_0a", f"v{g}_0b", f"v{g}_1a", f"v{g}_1b"]
        for i, v in enumerate(verbs):
            options = [u for j, u in enumerate(verbs) if j not in (i, i ^ 1)]
            assert w.result[v] == options[int(r.integers(2))]
            assert w.antonym[v] == verbs[i ^ 1]
    r = _rng(seed, "forms", "en")
    en = "".join("bdfgklmnprstvz"[r.integers(14)] + "aeiou"[r.integers(5)] for _ in range(3))
    assert w.languages["en"].forms["n0_0"] == (en,)
    r = _rng(seed, "forms", "xa")
    if r.random() < 0.8:
        assert w.languages["xa"].forms["n0_0"] == (en,) and "n0_0" in w.languages["xa"].shared
    else:
        xa = "".join("bcdfghjklmnpqrstvwxyz"[r.integers(21)] + "aeiou"[r.integers(5)]
                     for _ in range(3)) + "a"
        assert w.languages["xa"].forms["n0_0"] == (xa,)  # xa has no inflection


def test_world_is_deterministic_for_a_seed():
    a, b = World({"seed": 3}), World({"seed": 3})
    assert a.vocab == b.vocab
    assert {c: l.forms for c, l in a.languages.items()} == {c: l.forms for c, l in
                                                           b.languages.items()}
    assert a.vocab != World({"seed": 4}).vocab
    ctx = DataContext(world=normalize_world({"seed": 3, **SMALL}))
    from raysweep.tasks import synthetic

    for name in ("syn_xnli", "syn_xquad", "syn_corpus"):
        task = get_task(name)
        split = "train" if name == "syn_corpus" else "test"
        lang = task.languages[-1]
        x = task.load(split, lang, ctx).examples
        gen._items_cached.cache_clear()
        synthetic._cached_split.cache_clear()
        assert task.load(split, lang, ctx).examples == x


def world_digest(overrides):
    """A digest of a world's vocabulary and of three of its splits."""
    cfg = normalize_world(overrides)
    ctx = DataContext(world=cfg)
    parts = [get_world(cfg).vocab]
    for name, split, lang in (("syn_xnli", "test", "xe"), ("syn_corpus", "train", "xc"),
                              ("syn_ner", "train", "en")):
        parts.append([repr(e) for e in get_task(name).load(split, lang, ctx).examples])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def test_world_does_not_depend_on_the_process():
    """The same world in another interpreter under another string-hash seed: nothing draws
    from Python's `hash` or from set iteration order."""
    hash_seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            f"from test_world import world_digest; print(world_digest({SMALL!r}))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed,
                                            "TOKENIZERS_PARALLELISM": "false"})
    assert other.stdout.strip().splitlines()[-1] == world_digest(SMALL)


# The default schedule (DEFAULT_WORLD): anchors linear from 0.8 to 0.3 over the five other
# languages, orders cycled SVO SVO SOV SOV VSO, adjectives after the noun F T F T T, inflection
# linear from 0 to 0.2; distance = 0.55 (1 - anchor) + 0.25 order + 0.1 adj_after
# + 0.1 inflection, where SOV and VSO each swap one of the three S/V/O pairs of SVO (1/3):
#   xa 0.55*0.2                            = 0.11
#   xb 0.55*0.325 + 0.1 + 0.1*0.05         = 0.28375 -> 0.2838
#   xc 0.55*0.45 + 0.25/3 + 0.1*0.1        = 0.34083 -> 0.3408
#   xd 0.55*0.575 + 0.25/3 + 0.1 + 0.015   = 0.51458 -> 0.5146
#   xe 0.55*0.7 + 0.25/3 + 0.1 + 0.02      = 0.58833 -> 0.5883
DEFAULT_LANGUAGES = [
    ("xa", 0.8, "SVO", False, 0.0, 0.11),
    ("xb", 0.675, "SVO", True, 0.05, 0.2838),
    ("xc", 0.55, "SOV", False, 0.1, 0.3408),
    ("xd", 0.425, "SOV", True, 0.15, 0.5146),
    ("xe", 0.3, "VSO", True, 0.2, 0.5883),
]


def test_default_languages_follow_the_schedule():
    w = get_world({})
    assert w.codes == ("en", "xa", "xb", "xc", "xd", "xe")
    assert w.distance["en"] == 0.0 and w.languages["en"].shared == frozenset(w.lexicon)
    for code, anchor, order, adj_after, inflection, distance in DEFAULT_LANGUAGES:
        lang = w.languages[code]
        assert (lang.order, lang.adj_after) == (order, adj_after), code
        assert lang.anchor == pytest.approx(anchor, abs=1e-12)
        assert lang.inflection == pytest.approx(inflection, abs=1e-12)
        assert w.distance[code] == pytest.approx(distance, abs=1e-12), code
    d = [w.distance[c] for c in w.codes]
    assert all(a < b for a, b in itertools.pairwise(d)), "the schedule is in order of distance"
    assert {o: kendall_order_distance(o) for o in ("SVO", "SOV", "VSO", "VOS", "OSV", "OVS")} \
        == pytest.approx({"SVO": 0, "SOV": 1 / 3, "VSO": 1 / 3, "VOS": 2 / 3, "OSV": 2 / 3,
                          "OVS": 1})
    assert language_distance(1.0, "SVO", False, 0.0) == 0.0
    assert language_distance(0.0, "OVS", True, 1.0) == 1.0


def test_lexicon_and_vocabulary_sizes():
    w = get_world({})
    assert len(w.lexicon) == N_LEXEMES == 102
    assert len(w.all_nouns) == 36 and len(w.all_verbs) == 12
    # specials, the English forms, then every other language's own (non-shared) forms
    own = sum(len(forms) for c in w.codes[1:] for k, forms in w.languages[c].forms.items()
              if k not in w.languages[c].shared)
    assert len(w.vocab) == 5 + N_LEXEMES + own
    assert len(set(w.vocab)) == len(w.vocab)


def test_extreme_languages_share_all_or_only_anchors():
    """anchor 1: every form is English; anchor 0: only numbers, punctuation and (with
    probability name_anchor_bonus) names are; inflection 1: every own noun/verb/adjective has
    its two suffixed variants."""
    w = World({"languages": [{"code": "ya", "anchor": 1.0},
                             {"code": "yb", "anchor": 0.0, "order": "OVS", "adj_after": True,
                              "inflection": 1.0}]})
    en, ya, yb = (w.languages[c] for c in ("en", "ya", "yb"))
    assert w.codes == ("en", "ya", "yb") and (w.distance["ya"], w.distance["yb"]) == (0.0, 1.0)
    assert ya.forms == en.forms and ya.shared == frozenset(w.lexicon)
    always = {k for k, lx in w.lexicon.items() if lx.pos in ("num", "punct")}
    names = {k for k, lx in w.lexicon.items() if lx.pos in ("name", "place")}
    assert always <= yb.shared <= always | names
    english = {f for forms in en.forms.values() for f in forms}
    for key, lx in w.lexicon.items():
        if key in yb.shared:
            assert yb.forms[key] == en.forms[key]
            continue
        own = yb.forms[key][0]
        assert own.endswith("b") and own not in english, key  # the code's suffix letter
        variants = (own + "-e", own + "-i") if lx.pos in INFLECTED else ()
        assert yb.forms[key] == (own, *variants), key


def test_anchor_rates_within_binomial_bounds():
    """Each content lexeme is shared with probability `anchor`, each name or place with
    anchor + name_anchor_bonus (capped at 1): the shared fractions lie within 4 standard
    deviations of a binomial around those rates. A large lexicon makes the bound tight
    (about +-0.08 for content words, against 0.125 between neighbouring languages)."""
    w = World({"nouns_per_class": 100, "n_names": 120, "n_places": 120})
    bonus = DEFAULT_WORLD["name_anchor_bonus"]
    for code, anchor, *_ in DEFAULT_LANGUAGES:
        lang = w.languages[code]
        for kinds, p in ((CONTENT, anchor), (("name", "place"), min(1.0, anchor + bonus))):
            keys = [k for k, lx in w.lexicon.items() if lx.pos in kinds]
            frac = sum(k in lang.shared for k in keys) / len(keys)
            bound = 4 * math.sqrt(p * (1 - p) / len(keys))
            assert abs(frac - p) <= bound, (code, kinds, frac, p, bound)  # p = 1: exact


def test_rendering_follows_word_order_and_adjective_position():
    """A fixed clause, rendered without randomness (base forms), in each of the six orders with
    adjectives before and after the noun: constituents in the language's order, a number before
    the adjective and noun, 'not' before the verb, and 'in' + place after the clause (a
    postposition in OV languages)."""
    specs = [{"code": f"y{o.lower()}{int(after)}", "order": o, "adj_after": after}
             for o in ("SVO", "SOV", "VSO", "VOS", "OSV", "OVS") for after in (False, True)]
    w = World({"languages": specs})
    clause = Clause(NP(("n0_0",), adj="a0_1", num="d:3"), "v0_0a", NP(("n2_1",)), neg=True,
                    loc=("pl0",))
    for code in w.codes:
        lang = w.languages[code]
        f = {k: lang.forms[k][0] for k in lang.forms}
        noun_adj = [f["n0_0"], f["a0_1"]] if lang.adj_after else [f["a0_1"], f["n0_0"]]
        parts = {"S": [f["d:3"], *noun_adj], "V": [f["f:not"], f["v0_0a"]], "O": [f["n2_1"]]}
        tokens = [t for c in lang.order for t in parts[c]]
        ov = lang.order.index("O") < lang.order.index("V")
        tokens += [f["pl0"], f["f:in"]] if ov else [f["f:in"], f["pl0"]]
        r = w.render_clause(clause, code)
        assert r.tokens == tokens, code
        assert r.tags == ["B-LOC" if t == f["pl0"] else "O" for t in tokens]
        starts = sorted((r.spans[name][0], c) for c, name in zip("SVO", ("subj", "verb", "obj")))
        assert "".join(c for _, c in starts) == lang.order


BALANCE = {**SMALL, "train_size": 121, "dev_size": 31, "test_size": 29}


@pytest.mark.parametrize("name", ["syn_xnli", "syn_nli_en", "syn_hypernym", "syn_random",
                                  "syn_lexparity", "syn_xcopa", "syn_script", "syn_antonym",
                                  "syn_classmatch", "syn_echo", "syn_lexclass"])
def test_label_balanced(name):
    """Labels are assigned round-robin before shuffling: a split of n examples over k labels
    has exactly n // k of each, plus one for the first n % k labels (sizes chosen so that the
    remainder is not zero)."""
    task = get_task(name)
    sizes = {"train": 121, "validation": 31, "test": 29}
    for split in task.splits:
        s = task.load(split, "en", DataContext(world=normalize_world(BALANCE)))
        n, k = sizes[split], task.num_labels
        counts = collections.Counter(ex.label for ex in s.examples)
        assert dict(counts) == {lab: n // k + (lab < n % k) for lab in range(k)}, (split, counts)


def test_labels_mean_what_the_task_says():
    """Each label, read back from the English text through the lexicon, follows its task's
    definition: NLI (class of the subject and same verb / its antonym), hypernym (the subject's
    class), antonym, script, has-location, XCOPA (the effect is the verb's script result) and
    NER tags (persons and places)."""
    ctx = DataContext(world=normalize_world(SMALL))
    w = get_world(SMALL)

    def pairs(name):
        task = get_task(name)
        for split in task.splits:
            for ex in task.load(split, "en", ctx).examples:
                yield ex, _lexemes(w, "en", ex.text_a), _lexemes(w, "en", ex.text_b or "")

    for name in ("syn_xnli", "syn_nli_en"):
        seen = collections.Counter()
        for ex, prem, hyp in pairs(name):
            k, pv = _subject_class(w, prem), _verb(w, prem)
            hk, hv = w.lexicon[hyp[0]].cls, hyp[1]
            assert w.lexicon[hyp[0]].pos == "cls" and len(hyp) == 3, ex
            if ex.label == 0:
                assert (hk, hv) == (k, pv), ex
            elif ex.label == 2:
                assert (hk, hv) == (k, w.antonym[pv]), ex
            else:
                assert hk != k and hv in (pv, w.antonym[pv]), ex
            seen[ex.label] += 1
        assert set(seen) == {0, 1, 2}
    for ex, prem, hyp in pairs("syn_classmatch"):  # class relation alone, verb kept
        assert w.lexicon[hyp[0]].pos == "cls" and hyp[1] == _verb(w, prem), ex
        assert (w.lexicon[hyp[0]].cls == _subject_class(w, prem)) == bool(ex.label), ex
    for ex, prem, hyp in pairs("syn_echo"):  # the probe recurs; a 'no' probe keeps its POS
        assert w.lexicon[hyp[0]].pos == "cls" and len(hyp) == 3, ex
        assert (hyp[1] in prem) == bool(ex.label), ex
        assert w.lexicon[hyp[1]].pos in ("noun", "adj", "verb"), ex
    for ex, a, _ in pairs("syn_hypernym"):
        assert _subject_class(w, a) == ex.label, ex
    labels_of_class = collections.defaultdict(set)
    for ex, a, _ in pairs("syn_lexclass"):  # noun i of class k: label (k + i) mod n_classes
        noun = next(k for k in a if w.lexicon[k].pos == "noun")  # English is SVO
        k = w.lexicon[noun].cls
        assert ex.label == (k + w.nouns[k].index(noun)) % w.n_classes, ex
        labels_of_class[k].add(ex.label)
    assert all(len(v) > 1 for v in labels_of_class.values())  # the label is no function of class
    for ex, a, _ in pairs("syn_haslocation"):
        assert ("f:in" in a) == bool(ex.label), ex
    for ex, a, b in pairs("syn_antonym"):
        va, vb = _verb(w, a), _verb(w, b)
        assert vb == (va if ex.label == 0 else w.antonym[va]), ex
    for ex, a, b in pairs("syn_script"):
        va, vb = _verb(w, a), _verb(w, b)
        assert (vb == w.result[va]) == bool(ex.label) and vb != va, ex
        assert w.lexicon[vb].cls == w.lexicon[va].cls, ex
    task = get_task("syn_xcopa")
    for split in task.splits:
        for ex in task.load(split, "en", ctx).examples:
            effect = w.result[_verb(w, _lexemes(w, "en", ex.context))]
            verbs = [_verb(w, _lexemes(w, "en", c)) for c in ex.choices]
            assert verbs[ex.label] == effect and verbs[1 - ex.label] != effect, ex
    persons, places = set(w.person_names), set(w.place_names)
    for ex in get_task("syn_ner").load("train", "en", ctx).examples:
        for key, tag in zip(_lexemes(w, "en", " ".join(ex.words)), ex.tags):
            kind = tag[2:] if tag != "O" else None
            if key in persons & places:  # ambiguous names: a person as subject, else a place
                assert kind in ("PER", "LOC"), ex
            elif key in persons or key in places:
                assert kind == ("PER" if key in persons else "LOC"), ex
            else:
                assert kind is None, ex


def test_xnli_train_size_caps_only_the_target_train_split():
    """`xnli_train_size` sets syn_xnli's English train split (at most `train_size`); dev and test
    are drawn first, so they are the same items whatever the train size."""
    def splits(world):
        task, ctx = get_task("syn_xnli"), DataContext(world=normalize_world(world))
        return {s: [(e.text_a, e.text_b, e.label) for e in task.load(s, "en", ctx).examples]
                for s in task.splits}

    small, full = splits({**SMALL, "xnli_train_size": 40}), splits({**SMALL, "xnli_train_size": None})
    assert len(small["train"]) == 40 and len(full["train"]) == SMALL["train_size"]
    assert small["validation"] == full["validation"] and small["test"] == full["test"]
    assert len(splits({**SMALL, "xnli_train_size": 10**6})["train"]) == SMALL["train_size"]
    assert collections.Counter(lab for *_, lab in small["train"]) == {0: 14, 1: 13, 2: 13}
    assert DEFAULT_WORLD["xnli_train_size"] < DEFAULT_WORLD["train_size"]


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

    def texts(name):
        task = get_task(name)
        return {(e.text_a, e.text_b) for sp in task.splits
                for e in task.load(sp, "en", ctx).examples}

    xnli, nli = texts("syn_xnli"), texts("syn_nli_en")
    assert len(xnli) == 120 + 30 + 30 and len(nli) == 120 + 30
    assert not xnli & nli
    for name in ("syn_classmatch", "syn_echo"):  # their pairs could repeat xnli's
        other = texts(name)
        assert len(other) == 120 + 30 and not xnli & other, name


def test_tokenizer_ids_and_round_trip():
    tok = build_tokenizer({})
    vocab = get_world({}).vocab
    assert vocab[:5] == ["<pad>", "<s>", "</s>", "<sep>", "<unk>"]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.sep_token_id,
            tok.unk_token_id) == (0, 1, 2, 3, 4)
    assert len(tok) == len(vocab)
    assert tok.convert_tokens_to_ids(vocab) == list(range(len(vocab)))
    ex = get_task("syn_xnli").load("test", "xc", DataContext()).examples[0]
    ids_a = [vocab.index(t) for t in ex.text_a.split()]
    ids_b = [vocab.index(t) for t in ex.text_b.split()]
    single = tok(ex.text_a)["input_ids"]
    assert single == [1, *ids_a, 2]
    assert tok.decode(single, skip_special_tokens=True) == ex.text_a
    pair = tok(ex.text_a, ex.text_b, truncation=True, max_length=64)
    assert pair["input_ids"] == [1, *ids_a, 3, *ids_b, 2]
    short = tok(ex.text_a, ex.text_b, truncation=True, max_length=8)["input_ids"]
    assert len(short) == 8 and (short[0], short[-1]) == (1, 2) and short.count(3) == 1
    enc = tok(ex.text_a, return_offsets_mapping=True)
    words = ex.text_a.split()
    assert enc.word_ids() == [None, *range(len(words)), None]
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
TARGETS = {"syn_xnli", "syn_xnli_translate", "syn_xcopa", "syn_ner", "syn_xquad", "syn_tatoeba"}


def _expected_size(name, split):
    """Split sizes from SMALL: 200 corpus sentences packed 4 to a line; retrieval and the
    clause-LM tasks take dev/test from the retrieval pool (30); others train 120, dev/test 30."""
    if name == "syn_corpus":
        return math.ceil(200 / 4)
    if split != "train" and name in ("syn_tatoeba", "syn_lm_en", "syn_mlm"):
        return 30
    return {"train": 120, "validation": 30, "test": 30}[split]


def test_every_task_loads_every_declared_split_and_language():
    from raysweep.tasks.synthetic import INTERMEDIATE_NOTES

    ctx = DataContext(world=normalize_world(SMALL))
    tasks = _syn_tasks()
    by_role = {r: {n for n, t in tasks.items() if r in t.roles}
               for r in ("pretrain", "target", "intermediate")}
    assert by_role == {"pretrain": {"syn_corpus"}, "target": TARGETS, "intermediate":
                       set(INTERMEDIATE_NOTES) | {"syn_hypernym_translate", "syn_mlm"}}
    for name, task in tasks.items():
        translated = name in ("syn_corpus", "syn_mlm") or name.endswith("_translate")
        for split in task.splits:
            for lang in task.languages:
                if split == "train" and lang != "en" and not translated:
                    with pytest.raises(TaskDataError, match="English only"):
                        task.load(split, lang, ctx)
                    continue
                s = task.load(split, lang, ctx)
                assert len(s) == _expected_size(name, split), (name, split, lang)
                assert all(isinstance(e, EXAMPLE_TYPES[task.head]) for e in s.examples)
                if task.head == "retrieval":
                    # query i's translation is candidate i, in a pool of all of them
                    assert [c.id for c in s.candidates] == [f"en-{i}" for i in range(len(s))]
                    assert [e.relevant for e in s.examples] == [(f"en-{i}",)
                                                                for i in range(len(s))]
                if task.head == "span_qa":
                    for e in s.examples:
                        a = e.answers[0]
                        assert e.context[a.start:a.start + len(a.text)] == a.text
                if task.head == "token_cls":
                    for e in s.examples:
                        assert len(e.words) == len(e.tags)
                        assert set(e.tags) <= set(task.label_names)
                if task.head in ("seq_cls", "multiple_choice"):  # round-robin labels
                    n, k = len(s), task.num_labels
                    counts = collections.Counter(e.label for e in s.examples)
                    assert dict(counts) == {lab: n // k + (lab < n % k) for lab in range(k)}
    with pytest.raises(TaskDataError):
        get_task("syn_xnli").load("test", "zz", ctx)


def test_dev_test_are_parallel_across_languages():
    """Dev/test sets render the same meanings in every language: with the same labels, each
    sentence holds exactly the lexemes of its English counterpart, in that language's forms
    (some of them English cognates, the rest its own)."""
    ctx = DataContext(world=normalize_world(SMALL))
    w = get_world(SMALL)
    task = get_task("syn_xnli")
    for split in ("validation", "test"):
        en = task.load(split, "en", ctx).examples
        for lang in task.languages[1:]:
            xx = task.load(split, lang, ctx).examples
            assert [e.label for e in xx] == [e.label for e in en]
            own = 0
            for a, b in zip(en, xx):
                for field in ("text_a", "text_b"):
                    keys = _lexemes(w, lang, getattr(b, field))
                    assert sorted(keys) == sorted(_lexemes(w, "en", getattr(a, field))), (a, b)
                    own += sum(k not in w.languages[lang].shared for k in keys)
            assert own > 0, lang
    tatoeba = get_task("syn_tatoeba")
    for lang in tatoeba.languages:
        s = tatoeba.load("test", lang, ctx)
        english = {c.id: c.text for c in s.candidates}
        for q in s.examples:
            assert sorted(_lexemes(w, lang, q.query)) == sorted(
                _lexemes(w, "en", english[q.relevant[0]])), q


def test_figure1_small_zero_shot_above_chance(tmp_path):
    """Small version of bench/transfer.py figure 1, through the sweep's own runner: a plan from
    tiny_scaling for the 0.1M model (pretrain 400 steps, no intermediate task, English
    syn_xnli 300 steps), zero-shot on 200 test examples per language. Chance is 1/3; the
    0.02M model stays near chance under the same recipe, so this can fail."""
    from raysweep.plan.build import build_plan
    from raysweep.results.tables import load
    from raysweep.run.runner import run_local
    from raysweep.spec import load_space

    torch.set_num_threads(1)
    spec, _ = load_space("tiny_scaling")
    spec = spec.model_copy(update={"stages": spec.stages.model_copy(update={
        "eval": spec.stages.eval.model_copy(update={"max_examples": 200})})})
    plan = build_plan(spec, spec.model("tiny-s"),
                      {"lr_target": 1e-3, "lr_intermediate": 2e-3, "mixture": "none", "seed": 0})
    run_local(plan, tmp_path, tmp_path / "sweep", "t0")
    rows = load(tmp_path / "sweep", "metrics").to_pylist()
    scores = {r["language"]: r["value"] for r in rows if r["stage"] == "eval" and
              r["split"] == "test" and r["metric"] == "score" and r["task"] == "syn_xnli"}
    zero_shot = sum(v for k, v in scores.items() if k not in ("en", "all")) / 5
    assert scores["all"] == pytest.approx(zero_shot)
    assert scores["en"] > 0.7, scores
    assert zero_shot > 0.39, scores  # chance 1/3
    assert scores["xa"] > 0.45, scores  # the language closest to English transfers best
