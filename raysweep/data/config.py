"""The synthetic world's config: the defaults, merging user overrides, the config's key, and
seeded randomness (every draw of the world is a pure function of the world seed and a purpose)."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import numpy as np

ORDERS = ("SVO", "SOV", "VSO", "VOS", "OSV", "OVS")

DEFAULT_WORLD: dict[str, Any] = {
    "seed": 0,
    # languages, English included; the others are drawn from the schedules below unless
    # `languages` lists them explicitly ([{code, anchor, order, adj_after, inflection}, ...]).
    "n_languages": 6,
    "languages": None,
    "anchor_max": 0.8,  # anchor fraction of the closest language ...
    "anchor_min": 0.3,  # ... and of the farthest; linear in between
    "name_anchor_bonus": 0.3,  # names are shared more often than common words
    "orders": ["SVO", "SVO", "SOV", "SOV", "VSO"],  # cycled over the non-English languages
    "adj_after": [False, True, False, True, True],
    "inflection_max": 0.2,  # inflection probability of the farthest language (linear from 0)
    # the latent grammar
    "n_classes": 6,  # noun classes; classes 2g and 2g+1 form subject group g
    "nouns_per_class": 6,
    "adjs_per_class": 2,
    "verb_pairs_per_group": 2,  # each pair is (verb, antonym)
    "n_names": 8,  # person names
    "n_places": 6,
    "n_ambiguous_names": 3,  # names used both for persons and for places
    # the pretraining corpus, sentences per language
    "corpus_sentences": 8000,
    "isa_frac": 0.1,  # "dog is animal" sentences
    "generic_frac": 0.1,  # class word as subject
    "script_frac": 0.15,  # two-clause discourse: v then result(v)
    "codeswitch_frac": 0.3,  # non-English sentences with some content words in English
    "codeswitch_rate": 0.5,  # per word, within a code-switched sentence
    "parallel_frac": 0.0,  # "en sentence | xx sentence" lines
    "doc_sentences": 4,  # sentences packed into one corpus line (one LM example)
    # syn_xnli: share of 'neutral' hypotheses naming the sibling class (same verbs, told
    # apart only by adjectives and 'is' sentences) rather than a class of another group
    "xnli_sibling_frac": 0.2,
    # syn_xnli's English train split (examples; at most `train_size`, None: `train_size`),
    # small like X-STILTs' targets' English training sets: it decides how much an
    # intermediate task can add (DESIGN.md, "The landscape").
    "xnli_train_size": 450,
    # task sizes (examples; train is English, dev/test per language)
    "train_size": 3000,
    "dev_size": 300,
    "test_size": 300,
    "retrieval_pool": 300,
}


def normalize_world(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """DEFAULT_WORLD with `overrides` merged in. Unknown keys raise ValueError."""
    cfg = copy.deepcopy(DEFAULT_WORLD)
    for key, value in (overrides or {}).items():
        if key not in DEFAULT_WORLD:
            raise ValueError(
                f"unknown world key {key!r}; allowed keys: {', '.join(sorted(DEFAULT_WORLD))}"
            )
        cfg[key] = copy.deepcopy(value)
    if int(cfg["n_languages"]) < 2 and cfg["languages"] is None:
        raise ValueError("world key 'n_languages' must be at least 2 (English and one more)")
    if cfg["languages"] is not None:
        allowed = {"code", "anchor", "order", "adj_after", "inflection"}
        for spec in cfg["languages"]:
            bad = set(spec) - allowed
            if bad:
                raise ValueError(
                    f"unknown language key {sorted(bad)[0]!r} in world key 'languages'; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            if spec.get("order", "SVO") not in ORDERS:
                raise ValueError(f"language order {spec.get('order')!r}; allowed: {ORDERS}")
        cfg["n_languages"] = len(cfg["languages"]) + 1
    # canonical JSON round trip (tuples -> lists), so equal configs compare and hash equal
    return json.loads(json.dumps(cfg, sort_keys=True))


def world_key(cfg: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(normalize_world(cfg), sort_keys=True).encode()).hexdigest()[:12]


def rng_for(seed: int, *purpose: Any) -> np.random.Generator:
    """A generator seeded by the world seed and a purpose (task, split, language, ...)."""
    h = hashlib.sha256(json.dumps([seed, *purpose]).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))
