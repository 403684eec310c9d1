"""What retrieval splits are made of besides queries and a pool (torch-free, so the loaders, the
encoder and the metrics share it):

- `DevSentence`: a sentence of BUCC's dev split carried by a BUCC test split, so that the test
  score applies the threshold chosen on dev (XTREME's protocol) within one `Split`.
- XTREME-R's text preprocessing: `mention_query` / `entity_text` (Mewsli-X) and the LAReQA
  candidate text (`answer_text`: the sentence, then its paragraph).
- `as_retrieval`: SQuAD (LAReQA's English training source and model-selection dev set) seen as
  retrieval, as XTREME-R's `third_party/run_retrieval_qa.py` trains on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from raysweep.tasks.base import Candidate, RetrievalExample, SpanQAExample, Split, TaskDataError
from raysweep.tasks.sentence_breaks import infer_sentence_breaks
from raysweep.tasks.sources import field, where

# --- BUCC: the dev split inside the test split --------------------------------------------------

DEV_PREFIX = "dev/"


@dataclass(frozen=True)
class DevSentence(Candidate):
    """A BUCC dev sentence carried in a test split's `candidates` (candidates are never cut by an
    example limit, examples are). `side` is "source" (the non-English side, with its gold English
    ids in `relevant`) or "target" (English). Ids carry `DEV_PREFIX`, so they never collide with
    the test pool's."""

    side: str = "source"
    relevant: tuple[str, ...] = ()


def dev_sentences(split: Split) -> tuple[list[DevSentence], list[DevSentence]]:
    """The dev (sources, targets) a split carries; ([], []) when it carries none."""
    dev = [c for c in split.candidates if isinstance(c, DevSentence)]
    return [c for c in dev if c.side == "source"], [c for c in dev if c.side == "target"]


def pool(split: Split) -> list[Candidate]:
    """The split's own candidate pool (what its queries are ranked against)."""
    return [c for c in split.candidates if not isinstance(c, DevSentence)]


# --- Mewsli-X: XTREME-R's baseline preprocessing (third_party/utils_mewslix.py) ----------------

_MARKER = re.compile(r"\{(.*?)\}")


def _norm(text: str) -> str:
    return " ".join(text.splitlines()).replace("  ", " ").strip()


def mention_query(record: dict[str, Any], task: str, split: str) -> str:
    """XTREME-R's `preprocess_mention`: the mention's sentence with the mention in { braces },
    the mention text prepended ("Smith: The verdict came back for { Smith }, who ...").
    `record` is a ContextualMention ({context, mention})."""
    context = field(record, "context", task, split, "a Mewsli-X mention record")
    mention = field(record, "mention", task, split, "a Mewsli-X mention record")
    text = field(context, "text", task, split, "context")
    spans = field(context, "sentence_spans", task, split, "context")
    span = field(mention, "mention_span", task, split, "mention")
    start, end, mtext = (field(span, k, task, split, "mention_span")
                         for k in ("start", "end", "text"))
    if text[start:end] != mtext:
        raise TaskDataError(f"{where(task, split)}: mention {mention.get('example_id')!r}: "
                            f"field 'mention_span' text {mtext!r} != context[{start}:{end}]")
    focus = next((s for s in spans if s["start"] <= start < s["end"]
                  and s["start"] < end <= s["end"]), None)
    if focus is None:
        raise TaskDataError(f"{where(task, split)}: mention {mention.get('example_id')!r} is in "
                            "no single sentence (field 'sentence_spans')")
    left = _MARKER.sub(r"(\1)", text[focus["start"]:start])
    right = _MARKER.sub(r"(\1)", text[end:focus["end"]])
    return _norm(f"{mtext}: {left} {{ {mtext} }} {right}")


def entity_text(record: dict[str, Any], task: str, split: str) -> str:
    """XTREME-R's `preprocess_entity_description`: the description's sentences, joined."""
    description = field(record, "description", task, split, "a Mewsli-X entity record")
    spans = field(record, "sentence_spans", task, split, "a Mewsli-X entity record")
    return _norm(" ".join(description[s["start"]:s["end"]] for s in spans))


# --- LAReQA -------------------------------------------------------------------------------------


def answer_text(sentence: str, context: str) -> str:
    """A LAReQA candidate as XTREME-R encodes it: `(sentence + context).replace("\\n", "")`
    (`third_party/evaluate_retrieval.py`, task lareqa; `processors/lareqa.py` for training)."""
    return (sentence + context).replace("\n", "")


@lru_cache(maxsize=4)
def as_retrieval(split: Split) -> Split:
    """A SQuAD split (span-QA examples) as LAReQA retrieval; any other split unchanged.

    As XTREME-R's `RetrievalSquadProcessor._create_examples` (`processors/lareqa.py`): each
    paragraph is cut into sentences by `infer_sentence_breaks`; a question's answer is the
    sentence holding the start of its first answer, and a question whose first answer starts in
    no sentence is skipped. The pool is every sentence of every paragraph, as `answer_text`
    (sentence, then paragraph), with ids `<language>_<paragraph #>_<position>` as
    `utils_lareqa.Candidate`; `relevant` lists the sentences of all gold answers, the first
    answer's first (training pairs use that one)."""
    if not split.examples or not isinstance(split.examples[0], SpanQAExample):
        return split
    paragraphs: dict[str, tuple[int, list[tuple[int, int]]]] = {}
    cands: dict[str, str] = {}
    examples = []
    for ex in split.examples:
        if ex.context not in paragraphs:
            number = len(paragraphs) + 1
            breaks = list(infer_sentence_breaks(ex.context))
            paragraphs[ex.context] = number, breaks
            for pos, (s, e) in enumerate(breaks):
                cands[f"{split.language}_{number}_{pos}"] = answer_text(ex.context[s:e],
                                                                        ex.context)
        number, breaks = paragraphs[ex.context]
        relevant: list[str] = []
        for answer in ex.answers:
            pos = next((k for k, (s, e) in enumerate(breaks) if s <= answer.start < e), None)
            if pos is None and not relevant:
                break  # the first answer starts in no sentence: skipped, as XTREME-R does
            uid = f"{split.language}_{number}_{pos}"
            if pos is not None and uid not in relevant:
                relevant.append(uid)
        if relevant:
            examples.append(RetrievalExample(ex.id, ex.question, tuple(relevant)))
    return Split(split.task, split.split, split.language, tuple(examples),
                 candidates=tuple(Candidate(uid, text) for uid, text in cands.items()))
