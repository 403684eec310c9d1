"""A synthetic multilingual world: K languages that express the same meanings.

One shared latent grammar (lexemes with semantic classes, selectional preferences, hypernyms,
antonyms and "scripts" of cause and effect) is rendered into K surface languages. English
("en") is language 0; the others ("xa", "xb", ...) differ from it by
- `anchor`: the fraction of content lexemes whose surface token is the English one (cognates;
  numbers and punctuation are always shared, names more often than common words);
- `order`: clause word order (SVO, SOV, VSO, ...; SOV languages use postpositions);
- `adj_after`: whether adjectives follow the noun;
- `inflection`: the probability that a (non-shared) content word appears in one of two
  inflected variants, each its own token.
Each language's distance from English is a recorded number (`World.distance[code]`), a fixed
weighted sum of those knobs (see `language_distance`).

Meaning shows in co-occurrence: a verb selects the group of its subject and the class of its
object, an adjective belongs to one class, "is" sentences name a noun's class, and some
sentence pairs follow a verb's script (v -> result(v)). So monolingual text in any language
carries the same distributional structure, which is what lets pretraining align languages.

Everything is a pure function of the normalized world config: `get_world(cfg)` is cached by
the config, and every random draw is seeded from the world seed plus a purpose string.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import numpy as np

from raysweep.data.config import normalize_world, rng_for
from raysweep.data.grammar import (FUNCTION, NP, NUMBERS, PUNCT, SPECIALS, Clause, Language,
                                   Lexeme, Rendered, language_distance)


class World:
    def __init__(self, cfg: dict[str, Any]):
        self.cfg = cfg = normalize_world(cfg)
        self.seed = int(cfg["seed"])
        self._build_lexicon()
        self._build_languages()
        self.vocab = self._vocab()

    # lexicon ---------------------------------------------------------------------------------

    def _build_lexicon(self) -> None:
        c = self.cfg
        rng = rng_for(self.seed, "lexicon")
        self.n_classes = n_cls = int(c["n_classes"])
        if n_cls < 2 or n_cls % 2:
            raise ValueError("world key 'n_classes' must be an even number >= 2")
        self.n_groups = n_cls // 2
        lex: dict[str, Lexeme] = {}
        self.nouns = {k: [f"n{k}_{i}" for i in range(c["nouns_per_class"])] for k in range(n_cls)}
        self.adjs = {k: [f"a{k}_{i}" for i in range(c["adjs_per_class"])] for k in range(n_cls)}
        self.class_word = {k: f"cls{k}" for k in range(n_cls)}
        for k in range(n_cls):
            for n in self.nouns[k]:
                lex[n] = Lexeme(n, "noun", k)
            for a in self.adjs[k]:
                lex[a] = Lexeme(a, "adj", k)
            lex[self.class_word[k]] = Lexeme(self.class_word[k], "cls", k)
        # verbs: per subject group, pairs (v, antonym); each verb selects an object class
        self.verbs: dict[int, list[str]] = {}
        self.antonym: dict[str, str] = {}
        self.obj_class: dict[str, int] = {}
        for g in range(self.n_groups):
            vs = []
            for p in range(c["verb_pairs_per_group"]):
                a, b = f"v{g}_{p}a", f"v{g}_{p}b"
                self.antonym[a], self.antonym[b] = b, a
                oc = int(rng.integers(n_cls))
                self.obj_class[a] = self.obj_class[b] = oc
                vs += [a, b]
            self.verbs[g] = vs
            for v in vs:
                lex[v] = Lexeme(v, "verb", g)
        # scripts: result(v) is another verb of the same group (not v, not its antonym)
        self.result: dict[str, str] = {}
        for g, vs in self.verbs.items():
            for v in vs:
                options = [u for u in vs if u not in (v, self.antonym[v])]
                self.result[v] = options[int(rng.integers(len(options)))] if options else v
        # names: persons (group 0 subjects), places, ambiguous ones used as both
        n_amb = int(c["n_ambiguous_names"])
        self.person_names = [f"pn{i}" for i in range(c["n_names"])]
        self.place_names = [f"pl{i}" for i in range(c["n_places"])]
        self.person_names += [f"pnx{i}" for i in range(n_amb)]
        self.place_names += [f"pnx{i}" for i in range(n_amb)]
        for n in self.person_names:
            lex[n] = Lexeme(n, "name", 0)
        for n in self.place_names:
            lex.setdefault(n, Lexeme(n, "place"))
        for f in FUNCTION:
            lex["f:" + f] = Lexeme("f:" + f, "func")
        for p in PUNCT:
            lex["p:" + p] = Lexeme("p:" + p, "punct")
        for d in NUMBERS:
            lex["d:" + d] = Lexeme("d:" + d, "num")
        self.lexicon = lex
        self.all_verbs = [v for g in range(self.n_groups) for v in self.verbs[g]]
        self.all_nouns = [n for k in range(n_cls) for n in self.nouns[k]]

    # languages -------------------------------------------------------------------------------

    def _language_specs(self) -> list[dict[str, Any]]:
        c = self.cfg
        if c["languages"] is not None:
            specs = [dict(s) for s in c["languages"]]
            for i, s in enumerate(specs):
                s.setdefault("code", "x" + "abcdefghijklmnopqrstuvwyz"[i])
                s.setdefault("anchor", 0.3)
                s.setdefault("order", "SVO")
                s.setdefault("adj_after", False)
                s.setdefault("inflection", 0.0)
            return specs
        n = int(c["n_languages"]) - 1
        specs = []
        for i in range(n):
            t = i / max(1, n - 1)
            specs.append({
                "code": "x" + "abcdefghijklmnopqrstuvwyz"[i] if i < 25 else f"x{i}",
                "anchor": round(c["anchor_max"] + t * (c["anchor_min"] - c["anchor_max"]), 4),
                "order": c["orders"][i % len(c["orders"])],
                "adj_after": bool(c["adj_after"][i % len(c["adj_after"])]),
                "inflection": round(t * c["inflection_max"], 4),
            })
        return specs

    def _build_languages(self) -> None:
        used: set[str] = set(SPECIALS)
        en = Language("en", 1.0, "SVO", False, 0.0)
        syl_rng = rng_for(self.seed, "forms", "en")
        for key, lx in self.lexicon.items():
            en.forms[key] = (self._surface(key, lx, syl_rng, used, "en"),)
        en.shared = frozenset(self.lexicon)
        self.languages: dict[str, Language] = {"en": en}
        for spec in self._language_specs():
            lang = Language(spec["code"], float(spec["anchor"]), spec["order"],
                            bool(spec["adj_after"]), float(spec["inflection"]))
            if lang.code in self.languages:
                raise ValueError(f"language code {lang.code!r} appears twice")
            lang.distance = language_distance(lang.anchor, lang.order, lang.adj_after,
                                              lang.inflection)
            rng = rng_for(self.seed, "forms", lang.code)
            shared = set()
            for key, lx in self.lexicon.items():
                if lx.pos in ("punct", "num"):
                    p_share = 1.0
                elif lx.pos in ("name", "place"):
                    p_share = min(1.0, lang.anchor + float(self.cfg["name_anchor_bonus"]))
                else:
                    p_share = lang.anchor
                if rng.random() < p_share:
                    shared.add(key)
                    base = en.forms[key][0]
                else:
                    base = self._surface(key, lx, rng, used, lang.code)
                forms = [base]
                if key not in shared and lang.inflection > 0 and lx.pos in ("noun", "verb",
                                                                             "adj"):
                    for suf in ("-e", "-i"):
                        forms.append(base + suf)
                        used.add(base + suf)
                lang.forms[key] = tuple(forms)
            lang.shared = frozenset(shared)
            self.languages[lang.code] = lang
        self.codes = tuple(self.languages)
        self.distance = {code: lang.distance for code, lang in self.languages.items()}

    @staticmethod
    def _surface(key: str, lx: Lexeme, rng: np.random.Generator, used: set[str],
                 code: str) -> str:
        if lx.pos == "punct":
            form = key[2:]
        elif lx.pos == "num":
            form = key[2:]
        else:
            cons = "bdfgklmnprstvz" if code == "en" else "bcdfghjklmnpqrstvwxyz"
            vows = "aeiou"
            n_syl = 2 if lx.pos in ("func",) else 3
            while True:
                form = "".join(cons[rng.integers(len(cons))] + vows[rng.integers(len(vows))]
                               for _ in range(n_syl))
                if lx.pos in ("name", "place"):
                    form = form.capitalize()
                if code != "en":
                    form = form + code[-1]  # a per-language suffix letter keeps forms distinct
                if form not in used:
                    break
        used.add(form)
        return form

    def _vocab(self) -> list[str]:
        toks: list[str] = list(SPECIALS)
        seen = set(toks)
        for lang in self.languages.values():
            for forms in lang.forms.values():
                for f in forms:
                    if f not in seen:
                        seen.add(f)
                        toks.append(f)
        return toks

    # sampling meanings ----------------------------------------------------------------------

    def sample_np(self, rng: np.random.Generator, k: int, p_adj: float = 0.5,
                  p_num: float = 0.15, generic: bool = False) -> NP:
        head = self.class_word[k] if generic else self.nouns[k][rng.integers(len(self.nouns[k]))]
        adj = self.adjs[k][rng.integers(len(self.adjs[k]))] if rng.random() < p_adj else None
        num = "d:" + NUMBERS[rng.integers(len(NUMBERS))] if rng.random() < p_num else None
        return NP((head,), adj, num)

    def sample_name(self, rng: np.random.Generator, place: bool = False) -> tuple[str, ...]:
        pool = self.place_names if place else self.person_names
        n = 1 + int(rng.random() < 0.35)
        idx = rng.choice(len(pool), size=n, replace=False)
        return tuple(pool[i] for i in idx)

    def sample_clause(self, rng: np.random.Generator, verb: str | None = None,
                      subj_class: int | None = None, p_name: float = 0.15,
                      p_loc: float = 0.25, p_neg: float = 0.0, p_generic: float = 0.0,
                      p_obj: float = 0.85) -> Clause:
        if verb is None:
            if subj_class is not None:
                g = subj_class // 2
            else:
                g = int(rng.integers(self.n_groups))
            verb = self.verbs[g][rng.integers(len(self.verbs[g]))]
        g = self.lexicon[verb].cls
        if subj_class is None:
            subj_class = 2 * g + int(rng.integers(2))
        if subj_class // 2 == 0 and rng.random() < p_name:
            subj = NP(self.sample_name(rng))
        else:
            subj = self.sample_np(rng, subj_class, generic=rng.random() < p_generic)
        obj = self.sample_np(rng, self.obj_class[verb]) if rng.random() < p_obj else None
        loc = self.sample_name(rng, place=True) if rng.random() < p_loc else None
        return Clause(subj, verb, obj, bool(rng.random() < p_neg), loc)

    def subject_class(self, clause: Clause) -> int:
        if clause.subj.is_name:
            return 0
        return self.lexicon[clause.subj.head[0]].cls

    # rendering -------------------------------------------------------------------------------

    def word(self, lang: Language, key: str, rng: np.random.Generator | None) -> str:
        forms = lang.forms[key]
        if len(forms) > 1 and rng is not None and rng.random() < lang.inflection:
            return forms[1 + int(rng.integers(len(forms) - 1))]
        return forms[0]

    def _np_tokens(self, np_: NP, lang: Language, rng, switch) -> tuple[list[str], list[str]]:
        """Tokens and BIO entity tags of a noun phrase."""
        if np_.is_name:
            toks = [self.word(switch(k), k, rng) for k in np_.head]
            return toks, ["B-PER"] + ["I-PER"] * (len(toks) - 1)
        toks: list[str] = []
        head = self.word(switch(np_.head[0]), np_.head[0], rng)
        adj = self.word(switch(np_.adj), np_.adj, rng) if np_.adj else None
        if np_.num:
            toks.append(self.word(lang, np_.num, rng))
        if adj and not lang.adj_after:
            toks.append(adj)
        toks.append(head)
        if adj and lang.adj_after:
            toks.append(adj)
        return toks, ["O"] * len(toks)

    def render_clause(self, clause: Clause, code: str, rng: np.random.Generator | None = None,
                      switch_to: str | None = None, switch_rate: float = 0.0,
                      blank: str | None = None, blank_word: str | None = None) -> Rendered:
        """Tokens of `clause` in language `code`. `switch_to`: code-switch content words into
        that language with probability `switch_rate`. `blank`: replace that constituent
        ("subj", "obj", "loc") by `blank_word` (a question word lexeme)."""
        lang = self.languages[code]
        other = self.languages[switch_to] if switch_to else None

        def switch(key: str) -> Language:
            if other is not None and rng is not None and rng.random() < switch_rate:
                return other
            return lang

        parts: dict[str, tuple[list[str], list[str]]] = {}
        if blank == "subj":
            parts["S"] = ([self.word(lang, blank_word, None)], ["O"])
        else:
            parts["S"] = self._np_tokens(clause.subj, lang, rng, switch)
        verb = [self.word(switch(clause.verb), clause.verb, rng)]
        if clause.neg:
            verb = [self.word(lang, "f:not", None)] + verb
        parts["V"] = (verb, ["O"] * len(verb))
        if clause.obj is not None:
            if blank == "obj":
                parts["O"] = ([self.word(lang, blank_word, None)], ["O"])
            else:
                parts["O"] = self._np_tokens(clause.obj, lang, rng, switch)
        tokens: list[str] = []
        tags: list[str] = []
        spans: dict[str, tuple[int, int]] = {}
        names = {"S": "subj", "V": "verb", "O": "obj"}
        for c in lang.order:
            if c in parts:
                toks, tg = parts[c]
                spans[names[c]] = (len(tokens), len(tokens) + len(toks))
                tokens += toks
                tags += tg
        if clause.loc is not None:
            prep = self.word(lang, "f:in", None)
            if blank == "loc":
                place = [self.word(lang, blank_word, None)]
                ptags = ["O"]
            else:
                place = [self.word(lang, k, rng) for k in clause.loc]
                ptags = ["B-LOC"] + ["I-LOC"] * (len(place) - 1)
            postposition = lang.order.index("O") < lang.order.index("V")  # OV -> postpositions
            if postposition:
                spans["loc"] = (len(tokens), len(tokens) + len(place))
                tokens += place + [prep]
                tags += ptags + ["O"]
            else:
                spans["loc"] = (len(tokens) + 1, len(tokens) + 1 + len(place))
                tokens += [prep] + place
                tags += ["O"] + ptags
        return Rendered(tokens, spans, tags)

    def render_isa(self, noun: str, code: str, rng=None) -> list[str]:
        """'noun is class-word .' in the language's order (copula in the verb slot)."""
        lang = self.languages[code]
        k = self.lexicon[noun].cls
        parts = {"S": [self.word(lang, noun, rng)], "V": [self.word(lang, "f:is", None)],
                 "O": [self.word(lang, self.class_word[k], rng)]}
        return [t for c in lang.order for t in parts[c]] + ["."]

    def sentence(self, clause: Clause, code: str, rng=None, **kw) -> str:
        return " ".join(self.render_clause(clause, code, rng, **kw).tokens + ["."])

    def summary(self) -> dict[str, Any]:
        return {
            "languages": [self.languages[c].spec() for c in self.codes],
            "vocab_size": len(self.vocab),
            "n_lexemes": len(self.lexicon),
        }


@functools.lru_cache(maxsize=8)
def _world_cached(key: str) -> World:
    return World(json.loads(key))


def get_world(world_cfg: dict[str, Any] | None = None) -> World:
    """The world of a config (an empty dict or None means DEFAULT_WORLD); cached by the
    normalized config."""
    return _world_cached(json.dumps(normalize_world(world_cfg or {}), sort_keys=True))
