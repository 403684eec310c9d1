"""The latent grammar every language of the synthetic world renders: special tokens, lexemes,
languages and their distance from English, and the clause structures sentences are built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Special tokens, ids 0..4 in this order (the tiny LLaMA configs assume pad 0, bos 1, eos 2).
PAD, BOS, EOS, SEP, UNK = "<pad>", "<s>", "</s>", "<sep>", "<unk>"
SPECIALS = (PAD, BOS, EOS, SEP, UNK)

# Function lexemes; punctuation and digits are always shared (anchors).
FUNCTION = ("not", "in", "is", "so", "who", "what", "where", "and")
PUNCT = (".", "?", "|")
NUMBERS = tuple(str(d) for d in range(2, 10))


@dataclass(frozen=True)
class Lexeme:
    key: str  # language-independent id, e.g. "n3_5", "v1_0", "cls2", "f:not"
    pos: str  # noun, cls, adj, verb, name, place, func, punct, num
    cls: int = -1  # noun class (nouns, adjs, class words); subject group for verbs


@dataclass
class Language:
    code: str
    anchor: float
    order: str
    adj_after: bool
    inflection: float
    distance: float = 0.0
    forms: dict[str, tuple[str, ...]] = field(default_factory=dict)  # lexeme -> (base, *infl)
    shared: frozenset[str] = frozenset()  # lexemes whose base form is the English one

    def spec(self) -> dict[str, Any]:
        return {"code": self.code, "anchor": self.anchor, "order": self.order,
                "adj_after": self.adj_after, "inflection": self.inflection,
                "distance": self.distance}


def kendall_order_distance(order: str) -> float:
    """Fraction of the 3 constituent pairs (S,V,O) whose order differs from SVO."""
    pos = {c: i for i, c in enumerate(order)}
    ref = {c: i for i, c in enumerate("SVO")}
    pairs = [("S", "V"), ("S", "O"), ("V", "O")]
    return sum((pos[a] < pos[b]) != (ref[a] < ref[b]) for a, b in pairs) / 3


def language_distance(anchor: float, order: str, adj_after: bool, inflection: float) -> float:
    """The recorded distance from English, in [0, 1]: lexical (unshared tokens) weighs most,
    then word order, adjective position and inflection."""
    return round(0.55 * (1 - anchor) + 0.25 * kendall_order_distance(order)
                 + 0.1 * float(adj_after) + 0.1 * inflection, 4)


@dataclass(frozen=True)
class NP:
    """A noun phrase: a common noun or class word (with optional adjective and number), or a
    name (1-2 name lexemes)."""

    head: tuple[str, ...]  # lexeme keys: (noun,) or (name, name)
    adj: str | None = None
    num: str | None = None

    @property
    def is_name(self) -> bool:
        return self.head[0].startswith("pn")


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: str
    obj: NP | None
    neg: bool = False
    loc: tuple[str, ...] | None = None  # place lexemes


@dataclass
class Rendered:
    """A rendered clause: tokens plus where its constituents are (token index spans) and
    entity tags (BIO)."""

    tokens: list[str]
    spans: dict[str, tuple[int, int]]
    tags: list[str]
