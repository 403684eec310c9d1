"""Examples of the synthetic world: the pretraining corpus and every task's splits.

A task is a *meaning* generator (language-independent items, each with its label) plus a
renderer (item, language) -> canonical example. Splits are drawn from one pool per task,
deduplicated by the item's English rendering and then partitioned, so train / validation /
test never share an item; labels are assigned round-robin before shuffling, so every split is
label-balanced. Dev/test items are rendered in every language from the same meanings (like
XNLI's translated dev/test sets); train is English unless the task is a translated variant.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from raysweep.data.config import normalize_world, rng_for
from raysweep.data.grammar import Clause
from raysweep.data.world import World, get_world
from raysweep.tasks.base import (
    Answer,
    Candidate,
    ChoiceExample,
    PairExample,
    RetrievalExample,
    SpanQAExample,
    TaggingExample,
    TextExample,
)
from raysweep.tasks.synthetic_items import (
    Item,
    antonym_item,
    classmatch_item,
    clause_item,
    echo_item,
    haslocation_item,
    hypernym_item,
    lexclass_item,
    lexparity_item,
    ner_item,
    qa_item,
    random_item,
    script_item,
    xcopa_item,
    xnli_item,
)

SPLIT_SIZES = {"train": "train_size", "validation": "dev_size", "test": "test_size"}


# --- the pretraining corpus -------------------------------------------------------------------


def corpus_lines(world: World, code: str, split: str = "train", n: int | None = None) -> list[str]:
    """Monolingual text in `code`: plain clauses, 'is' sentences, generic (class-word)
    clauses, two-clause scripts, and (non-English) code-switched and parallel lines."""
    c = world.cfg
    n = int(c["corpus_sentences"]) if n is None else n
    if split != "train":
        n = max(50, n // 20)
    rng = rng_for(world.seed, "corpus", code, split)
    lines = []
    for _ in range(n):
        r = rng.random()
        if r < c["isa_frac"]:
            noun = world.all_nouns[rng.integers(len(world.all_nouns))]
            lines.append(" ".join(world.render_isa(noun, code, rng)))
            continue
        r -= c["isa_frac"]
        clause = world.sample_clause(rng, p_generic=c["generic_frac"], p_neg=0.1)
        if r < c["script_frac"]:
            nxt = Clause(clause.subj, world.result[clause.verb],
                         world.sample_np(rng, world.obj_class[world.result[clause.verb]]))
            so = world.word(world.languages[code], "f:so", None)
            lines.append(world.sentence(clause, code, rng) + f" {so} "
                         + world.sentence(nxt, code, rng))
            continue
        r -= c["script_frac"]
        if code != "en" and r < c["codeswitch_frac"]:
            lines.append(world.sentence(clause, code, rng, switch_to="en",
                                        switch_rate=c["codeswitch_rate"]))
            continue
        r -= c["codeswitch_frac"] if code != "en" else 0.0
        if code != "en" and r < c["parallel_frac"]:
            lines.append(world.sentence(clause, "en", rng) + " | "
                         + world.sentence(clause, code, rng))
            continue
        lines.append(world.sentence(clause, code, rng))
    k = max(1, int(c["doc_sentences"]))
    return [" ".join(lines[i:i + k]) for i in range(0, len(lines), k)]


@dataclass(frozen=True)
class Family:
    make: Callable[[World, np.random.Generator, int], Item]
    num_labels: int  # 1 for unlabeled (tagging, QA, retrieval, LM)
    key: Callable[[World, Item], str]  # dedup key (English, no randomness)


def _k_clause(world: World, item: Item) -> str:
    return world.sentence(item.data, "en")


def _k_pair(world: World, item: Item) -> str:
    a, b = item.data
    return world.sentence(a, "en") + " || " + world.sentence(b, "en")


def _k_copa(world: World, item: Item) -> str:
    prem, (x, y) = item.data
    return " || ".join(world.sentence(c, "en") for c in (prem, x, y))


def _k_qa(world: World, item: Item) -> str:
    clauses, j, kind = item.data
    return " || ".join(world.sentence(c, "en") for c in clauses) + f" {j} {kind}"


FAMILIES: dict[str, Family] = {
    "xnli": Family(xnli_item, 3, _k_pair),
    "nli_en": Family(xnli_item, 3, _k_pair),  # the MNLI analogue: disjoint from xnli's items
    "hypernym": Family(hypernym_item, 0, _k_clause),  # num_labels = n_classes
    "classmatch": Family(classmatch_item, 2, _k_pair),
    "echo": Family(echo_item, 2, _k_pair),
    "antonym": Family(antonym_item, 2, _k_pair),
    "script": Family(script_item, 2, _k_pair),
    "random": Family(random_item, 2, _k_clause),
    "lexparity": Family(lexparity_item, 2, _k_clause),
    "lexclass": Family(lexclass_item, 0, _k_clause),  # num_labels = n_classes
    "haslocation": Family(haslocation_item, 2, _k_clause),
    "xcopa": Family(xcopa_item, 2, _k_copa),
    "ner": Family(ner_item, 1, _k_clause),
    "qa": Family(qa_item, 1, _k_qa),
    "clauses": Family(clause_item, 1, _k_clause),
}


# aligned intermediate tasks whose pairs could repeat their target's test/dev/train pairs
EXCLUDE = {"nli_en": "xnli", "classmatch": "xnli", "echo": "xnli"}


def family_labels(world: World, family: str) -> int:
    n = FAMILIES[family].num_labels
    return world.n_classes if n == 0 else n


@functools.lru_cache(maxsize=64)
def _items_cached(key: str, family: str) -> dict[str, list[Item]]:
    world = get_world(json.loads(key))
    fam = FAMILIES[family]
    n_labels = family_labels(world, family)
    c = world.cfg
    sizes = {s: int(c[k]) for s, k in SPLIT_SIZES.items()}
    if family == "xnli" and c["xnli_train_size"] is not None:  # never above train_size
        sizes["train"] = min(sizes["train"], int(c["xnli_train_size"]))
    if family == "clauses":
        sizes["test"] = sizes["validation"] = int(c["retrieval_pool"])
    rng = rng_for(world.seed, "items", family)
    seen: set[str] = set()
    if family in EXCLUDE:  # keep an aligned intermediate task off its target's items
        for its in _items_cached(key, EXCLUDE[family]).values():
            seen.update(fam.key(world, it) for it in its)
    out: dict[str, list[Item]] = {}
    # validation and test first, so their sizes never depend on how large train is
    for split in ("test", "validation", "train"):
        items: list[Item] = []
        tries = 0
        while len(items) < sizes[split]:
            label = len(items) % n_labels
            it = fam.make(world, rng, label)
            k = fam.key(world, it)
            tries += 1
            if k in seen:
                if tries > 50 * sizes[split] + 1000:
                    raise ValueError(f"world too small for {sizes[split]} distinct "
                                     f"{family} items in split {split!r}")
                continue
            seen.add(k)
            items.append(it)
        order = rng.permutation(len(items))
        out[split] = [items[i] for i in order]
    return out


def items(world_cfg: dict[str, Any], family: str, split: str) -> list[Item]:
    key = json.dumps(normalize_world(world_cfg or {}), sort_keys=True)
    return _items_cached(key, family)[split]


# --- renderers: item -> canonical example ----------------------------------------------------


def _ex_rng(world: World, family: str, split: str, code: str, i: int) -> np.random.Generator:
    return rng_for(world.seed, "render", family, split, code, i)


def render_pair(world: World, family: str, split: str, code: str, i: int, item: Item,
                label: int | None = None) -> PairExample:
    rng = _ex_rng(world, family, split, code, i)
    if isinstance(item.data, tuple):
        a, b = item.data
        return PairExample(f"{family}-{split}-{code}-{i}", world.sentence(a, code, rng),
                           world.sentence(b, code, rng), item.label if label is None else label)
    return PairExample(f"{family}-{split}-{code}-{i}", world.sentence(item.data, code, rng),
                       None, item.label if label is None else label)


def render_choice(world: World, split: str, code: str, i: int, item: Item) -> ChoiceExample:
    rng = _ex_rng(world, "xcopa", split, code, i)
    prem, choices = item.data
    so = world.word(world.languages[code], "f:so", None)
    return ChoiceExample(f"xcopa-{split}-{code}-{i}", world.sentence(prem, code, rng),
                         tuple(f"{so} " + world.sentence(c, code, rng) for c in choices),
                         item.label)


def render_tagging(world: World, split: str, code: str, i: int, item: Item) -> TaggingExample:
    rng = _ex_rng(world, "ner", split, code, i)
    r = world.render_clause(item.data, code, rng)
    return TaggingExample(f"ner-{split}-{code}-{i}", tuple(r.tokens + ["."]),
                          tuple(r.tags + ["O"]))


QWORD = {"subj": "f:who", "obj": "f:what", "loc": "f:where"}


def render_qa(world: World, split: str, code: str, i: int, item: Item) -> SpanQAExample:
    rng = _ex_rng(world, "qa", split, code, i)
    clauses, j, kind = item.data
    tokens: list[str] = []
    answer_span = None
    for n, c in enumerate(clauses):
        r = world.render_clause(c, code, rng)
        if n == j:
            s, e = r.spans[kind]
            answer_span = (len(tokens) + s, len(tokens) + e)
        tokens += r.tokens + ["."]
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1
    context = " ".join(tokens)
    s, e = answer_span
    text = " ".join(tokens[s:e])
    assert context[starts[s]:starts[s] + len(text)] == text
    q = world.render_clause(clauses[j], code, rng, blank=kind, blank_word=QWORD[kind])
    question = " ".join(q.tokens + ["?"])
    return SpanQAExample(f"qa-{split}-{code}-{i}", question, context,
                         (Answer(text, starts[s]),))


def render_text(world: World, split: str, code: str, i: int, line: str) -> TextExample:
    return TextExample(f"corpus-{split}-{code}-{i}", line)


def retrieval_split(world: World, split: str, code: str) -> tuple[list[RetrievalExample],
                                                                list[Candidate]]:
    its = items(world.cfg, "clauses", split)
    cands = [Candidate(f"en-{i}", world.sentence(it.data, "en",
                                                 _ex_rng(world, "tatoeba", split, "en", i)))
             for i, it in enumerate(its)]
    queries = [RetrievalExample(f"tatoeba-{split}-{code}-{i}",
                                world.sentence(it.data, code,
                                               _ex_rng(world, "tatoeba", split, code, i)),
                                (f"en-{i}",))
               for i, it in enumerate(its)]
    return queries, cands
