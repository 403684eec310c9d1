"""SQuAD sentence breaking as XTREME-R does it before LAReQA training: a transcription of
`infer_sentence_breaks` in google-research/xtreme `third_party/processors/sb_sed.py` (a sed-style
breaker with SQuAD/Wikipedia tweaks; XTREME-R's `processors/lareqa.py` `_create_examples` cuts
every SQuAD paragraph with it to find the sentence that holds the answer). The rules, their order
and their regular expressions are the official ones; only the layout is ours."""

from __future__ import annotations

import re
from collections.abc import Iterator

_RQ, _LQ = "\u201D", "\u201C"

# (pattern, replacement) in the official order: first the splits, then rejoins and resplits.
_RULES: tuple[tuple[str, str], ...] = (
    # The main split: sentence-ending punctuation, optional closing quotes, whitespace, an
    # optional opening quote/bracket, then an upper-case letter or a digit.
    # (The official `[['"(...]` class, its `[` escaped: the same set, without Python's
    # "possible nested set" warning.)
    (r'''([.?!][)'" %s]*)\s(\s*[\['"(%s]?[A-Z0-9])''' % (_RQ, _LQ), r'\1\n\2'),
    # Wikipedia: editorial scraps after the sentence (".[citation needed]", ".[note 1] ").
    (r'''([.?!]['"]?)((\[[a-zA-Z0-9 ?]+\])+)\s(\s*['"(]?[A-Z0-9])''', r'\1\2\n\4'),
    (r'(\[\.\.\.\]\s*)\s(\[?[A-Z])', r'\1\n\2'),
    # Rejoins: titles, literary and month abbreviations, geographical abbreviations.
    (r'\b(Mrs?|Ms|Dr|Prof|Fr|Rev|Msgr|Sta?)\.\n', r'\1. '),
    (r'\b(Lt|Gen|Col|Maj|Adm|Capt|Sgt|Rep|Gov|Sen|Pres)\.\n', r'\1. '),
    (r'\b(e\.g|i\.?e|vs?|pp?|cf|a\.k\.a|approx|app|es[pt]|tr)\.\n', r'\1. '),
    (r'\b(Jan|Aug|Oct|Nov|Dec)\.\n', r'\1. '),
    (r'\b(Mt|Ft)\.\n', r'\1. '),
    (r'\b([ap]\.m)\.\n(Eastern|EST)\b', r'\1. \2'),
    # Rejoins: personal names with 3, 2 or 1 initials.
    (r'\b([A-Z]\.)[ \n]([A-Z]\.)[ \n]([A-Z]\.)[ \n]("?[A-Z][a-z])', r'\1 \2 \3 \4'),
    (r'\b([A-Z]\.)[ \n]([A-Z]\.)[ \n]("?[A-Z][a-z])', r'\1 \2 \3'),
    (r'\b([A-Z]\.[A-Z]\.)\n("?[A-Z][a-z])', r'\1 \2'),
    (r'\b([A-Z]\.)\n("?[A-Z][a-z])', r'\1 \2'),
    # Resplits: common sentence starts.
    (r'([.!?][\'")]*) (The|This|That|These|It) ', r'\1\n\2 '),
    (r'(\.) (Meanwhile|However)', r'\1\n\2'),
    (r'(\.) (In|On|By|During|After|Under|Although|Yet|As |Several|According to) ', r'\1\n\2 '),
    # Rejoins: numbered parts, born/died/circa, et al. (2005), H.R. 2000.
    (r'\b([Aa]rt|[Nn]o|Opp?|ch|Sec|cl|Rec|Ecl|Cor|Lk|Jn|Vol)\.\n([0-9IVX]+)\b', r'\1. \2'),
    (r'\b([bdrc]|ca|fl)\.\n([A-Z0-9])', r'\1. \2'),
    (r'\b(et al)\.\n(\(?[0-9]{4}\b)', r'\1. \2'),
    (r'\b(H\.R\.)\n([0-9])', r'\1 \2'),
    # SQuAD-specific joins.
    (r'(I Am\.\.\.)\n(Sasha Fierce|World Tour)', r'\1 \2'),
    (r'(Warner Bros\.)\n(Records|Entertainment)', r'\1 \2'),
    (r'(U\.S\.)\n(\(?\d\d+)', r'\1 \2'),
    (r'\b(Rs\.)\n(\d)', r'\1 \2'),
    # SQuAD-specific splits.
    (r'\b(Jay Z\.) ([A-Z])', r'\1\n\2'),
    (r'\b(Washington, D\.C\.) ([A-Z])', r'\1\n\2'),
    (r'\b(for 4\.\)) ([A-Z])', r'\1\n\2'),
    (r'\b(Wii U\.) ([A-Z])', r'\1\n\2'),
    (r'\. (iPod|iTunes)', r'.\n\1'),
    (r' (\[\.\.\.\]\n)', r'\n\1'),
    (r'(\.Sc\.)\n', r'\1 '),
    (r' (%s [A-Z])' % "\u2022", r'\n\1'),
)


def infer_sentence_breaks(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) character offsets of the sentences of `text` (Python slicing)."""
    text = re.sub(r"\n", " ", text)  # pre-existing newlines are not breaks
    for pattern, repl in _RULES:
        text = re.sub(pattern, repl, text)
    starts = [m.end() for m in re.finditer(r"^\s*", text, re.M)]
    sentences = [s.strip() for s in text.split("\n")]
    for start, sentence in zip(starts, sentences):
        yield start, start + len(sentence)
