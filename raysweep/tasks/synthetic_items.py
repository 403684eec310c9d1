"""The synthetic world's task items: each task's meaning generator, `make(world, rng, label)`
-> Item, language-independent (rendering into a language is `synthetic_examples`' job).
What each English intermediate task is for is in `synthetic.INTERMEDIATE_NOTES`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from raysweep.data.grammar import NP, Clause
from raysweep.data.world import World

ENTAIL, NEUTRAL, CONTRA = 0, 1, 2


@dataclass(frozen=True)
class Item:
    label: int
    data: Any


def xnli_item(world: World, rng: np.random.Generator, label: int) -> Item:
    prem = world.sample_clause(rng, p_neg=0.0, p_loc=0.2)
    k = world.subject_class(prem)
    if label == NEUTRAL:
        sib = k ^ 1
        if rng.random() < world.cfg["xnli_sibling_frac"]:
            hk = sib
        else:
            others = [j for j in range(world.n_classes) if j != k]
            hk = others[rng.integers(len(others))]
        verb = prem.verb if rng.random() < 0.5 else world.antonym[prem.verb]
    else:
        hk = k
        verb = prem.verb if label == ENTAIL else world.antonym[prem.verb]
    hyp = Clause(NP((world.class_word[hk],)), verb, None)
    return Item(label, (prem, hyp))


def classmatch_item(world: World, rng, label: int) -> Item:
    # syn_xnli's hard half alone: does the class word name the premise subject's class? The
    # hypothesis keeps the premise's verb, so only the class relation decides; half of the
    # mismatches name the sibling class (same verbs), so verb agreement cannot decide either.
    prem = world.sample_clause(rng, p_neg=0.0, p_loc=0.2)
    k = world.subject_class(prem)
    if label == 1:
        hk = k
    elif rng.random() < 0.5:
        hk = k ^ 1
    else:
        others = [j for j in range(world.n_classes) if j // 2 != k // 2]
        hk = others[rng.integers(len(others))]
    return Item(label, (prem, Clause(NP((world.class_word[hk],)), prem.verb, None)))


def _content_keys(clause: Clause) -> list[str]:
    keys = [clause.verb]
    for np_ in (clause.subj, clause.obj):
        if np_ is not None and not np_.is_name:
            keys += [np_.head[0]] + ([np_.adj] if np_.adj else [])
    return keys


def echo_item(world: World, rng, label: int) -> Item:
    # Does the hypothesis's second word occur in the premise? Shaped like syn_xnli's pairs
    # ('CLASS w', the class word random), the probe is the premise's verb half of the time,
    # else another of its content words; a 'no' probe has the same part of speech. Identity
    # is the same relation in every language (both sides are rendered in one language), and
    # with ~60 probe types it is learned as identity rather than as a table of English pairs.
    prem = world.sample_clause(rng, p_neg=0.0, p_loc=0.2)
    present = _content_keys(prem)
    probe = prem.verb if rng.random() < 0.5 else present[rng.integers(len(present))]
    if label == 0:
        pos = world.lexicon[probe].pos
        pool = [k for k, lx in world.lexicon.items() if lx.pos == pos and k not in present]
        probe = pool[rng.integers(len(pool))]
    cls = world.class_word[int(rng.integers(world.n_classes))]
    return Item(label, (prem, Clause(NP((cls,)), probe, None)))


def hypernym_item(world: World, rng, label: int) -> Item:
    clause = world.sample_clause(rng, subj_class=label, p_name=0.0)
    return Item(label, clause)


def antonym_item(world: World, rng, label: int) -> Item:
    a = world.sample_clause(rng)
    verb = a.verb if label == 0 else world.antonym[a.verb]
    b = Clause(a.subj, verb, world.sample_np(rng, world.obj_class[verb]))
    return Item(label, (a, b))


def script_item(world: World, rng, label: int) -> Item:
    a = world.sample_clause(rng)
    g = world.lexicon[a.verb].cls
    if label == 1:
        verb = world.result[a.verb]
    else:
        opts = [v for v in world.verbs[g] if v not in (a.verb, world.result[a.verb])]
        verb = opts[rng.integers(len(opts))]
    b = Clause(a.subj, verb, world.sample_np(rng, world.obj_class[verb]))
    return Item(label, (a, b))


def random_item(world: World, rng, label: int) -> Item:
    return Item(label, world.sample_clause(rng))


def lexparity_item(world: World, rng, label: int) -> Item:
    # the label is an arbitrary partition of the subject nouns that cuts across classes
    while True:
        clause = world.sample_clause(rng, p_name=0.0)
        noun = clause.subj.head[0]
        idx = world.all_nouns.index(noun)
        if (idx * 2654435761 >> 7) % 2 == label:
            return Item(label, clause)


def lexclass_item(world: World, rng, label: int) -> Item:
    # syn_hypernym's shape with an arbitrary class per noun: noun i of class k is labelled
    # (k + i) mod n_classes, so every class's nouns spread over every label and the label is
    # no function of the class: only memorizing English nouns solves it
    while True:
        clause = world.sample_clause(rng, p_name=0.0)
        lx = world.lexicon[clause.subj.head[0]]
        if (lx.cls + world.nouns[lx.cls].index(lx.key)) % world.n_classes == label:
            return Item(label, clause)


def haslocation_item(world: World, rng, label: int) -> Item:
    return Item(label, world.sample_clause(rng, p_loc=float(label)))


def xcopa_item(world: World, rng, label: int) -> Item:
    prem = world.sample_clause(rng, p_loc=0.0)
    g = world.lexicon[prem.verb].cls
    good = world.result[prem.verb]
    opts = [v for v in world.verbs[g] if v not in (prem.verb, good)]
    bad = opts[rng.integers(len(opts))]
    right = Clause(prem.subj, good, world.sample_np(rng, world.obj_class[good]))
    wrong = Clause(prem.subj, bad, world.sample_np(rng, world.obj_class[bad]))
    choices = (wrong, right) if label == 1 else (right, wrong)
    return Item(label, (prem, choices))


def ner_item(world: World, rng, label: int) -> Item:
    while True:
        c = world.sample_clause(rng, subj_class=0 if rng.random() < 0.7 else None,
                                p_name=0.7, p_loc=0.6)
        if c.subj.is_name or c.loc is not None:
            return Item(0, c)


def qa_item(world: World, rng, label: int) -> Item:
    while True:
        a = world.sample_clause(rng, p_loc=0.4, p_obj=0.9)
        b = world.sample_clause(rng, p_loc=0.4, p_obj=0.9)
        if a.verb == b.verb or world.antonym[a.verb] == b.verb:
            continue
        clauses = (a, b)
        j = int(rng.integers(2))
        kinds = ["subj"] + (["obj"] if clauses[j].obj else []) + (["loc"] if clauses[j].loc
                                                                  else [])
        kind = kinds[rng.integers(len(kinds))]
        return Item(0, (clauses, j, kind))


def clause_item(world: World, rng, label: int) -> Item:
    return Item(0, world.sample_clause(rng, p_neg=0.1))
