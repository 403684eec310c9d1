"""Word tagging: UD-POS and WikiANN NER (targets; trained on their English splits, as XTREME-R
does) and CCG supertagging (an English intermediate task of the seed study).

- `udpos`: Universal Dependencies CoNLL-U files as the UD release ships them, anywhere under
  `<data_dir>/udpos/` (e.g. `ud-treebanks-v2.7/UD_English-EWT/en_ewt-ud-train.conllu`); every
  treebank of a language is used, as XTREME does, files named `<lang>_<treebank>-ud-<split>.conllu`
  with split `train`/`dev`/`test`. Words are the syntactic words (multi-word token ranges and
  empty nodes are skipped), tags the UPOS column; like XTREME's preprocessing, sentences whose
  forms are (almost) all "_" are dropped and spaces / ZWNJ inside a word removed. With
  `allow_download`: `google/xtreme`, config `udpos.<Language>` (tokens, pos_tags) - the 33
  languages of the original XTREME only.
- `wikiann`: HF schema (`unimelb-nlp/wikiann`, config `<lang>`: tokens, ner_tags
  ClassLabel(O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC), langs, spans), saved with
  `save_to_disk` at `<data_dir>/wikiann/<lang>/`. These are the Rahimi et al. splits XTREME uses.
- `ccg`: CCGbank supertags in jiant's format, `<data_dir>/ccg/ccg.{train,dev,test}` (one
  sentence a line: space-separated words, a tab, space-separated supertags) and
  `<data_dir>/ccg/tags_to_id.json` (tag -> id; jiant's 1,363 tags). CCGbank is LDC-licensed:
  there is no download.
"""

from __future__ import annotations

from pathlib import Path

from raysweep.tasks.base import DataContext, Split, TaggingExample, Task, TaskDataError
from raysweep.tasks.registry import register
from raysweep.tasks.sources import (
    FileData,
    HFData,
    Options,
    all_of,
    check_split,
    hf_rows,
    local_dir,
    missing_data,
    read_json,
    require_file,
    where,
)

UPOS = ("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON",
        "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X")
NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC")
UDPOS_LANGUAGES = ("af", "ar", "bg", "de", "el", "en", "es", "et", "eu", "fa", "fi", "fr", "he",
                   "hi", "hu", "id", "it", "ja", "kk", "ko", "lt", "mr", "nl", "pl", "pt", "ro",
                   "ru", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "wo", "yo", "zh")
WIKIANN_LANGUAGES = ("af", "ar", "az", "bg", "bn", "de", "el", "en", "es", "et", "eu", "fa", "fi",
                     "fr", "gu", "he", "hi", "hu", "id", "it", "ja", "jv", "ka", "kk", "ko", "lt",
                     "ml", "mr", "ms", "my", "nl", "pa", "pl", "pt", "qu", "ro", "ru", "sw", "ta",
                     "te", "th", "tl", "tr", "uk", "ur", "vi", "yo", "zh")
# google/xtreme's udpos configs are named by language (original XTREME languages only).
UD_LANGUAGE_NAMES = {
    "af": "Afrikaans", "ar": "Arabic", "bg": "Bulgarian", "de": "German", "el": "Greek",
    "en": "English", "es": "Spanish", "et": "Estonian", "eu": "Basque", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "kk": "Kazakh", "ko": "Korean",
    "mr": "Marathi", "nl": "Dutch", "pt": "Portuguese", "ru": "Russian", "ta": "Tamil",
    "te": "Telugu", "th": "Thai", "tl": "Tagalog", "tr": "Turkish", "ur": "Urdu",
    "vi": "Vietnamese", "yo": "Yoruba", "zh": "Chinese",
}
SPLITS = {"train": "train", "validation": "dev", "test": "test"}


def read_conllu(path: Path, task: str, split: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """(words, UPOS tags) per sentence of a CoNLL-U file."""
    sentences = []
    words: list[str] = []
    tags: list[str] = []

    def end() -> None:
        n_empty = sum(w == "_" for w in words)
        if words and (n_empty == 0 or n_empty < len(words) - 1):
            clean = tuple("".join(w.replace("\u200c", "").split(" ")) for w in words)
            sentences.append((clean, tuple(tags)))

    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n")
            if not line.strip():
                end()
                words, tags = [], []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise TaskDataError(f"{where(task, split)}: {path} line {n}: a CoNLL-U word line "
                                    f"has 10 tab-separated fields (ID FORM LEMMA UPOS ...), "
                                    f"got {len(cols)}; field 'UPOS' missing")
            if "-" in cols[0] or "." in cols[0]:
                continue  # multi-word token range or empty node
            if cols[3] not in UPOS:
                raise TaskDataError(f"{where(task, split)}: {path} line {n}: field 'UPOS' is "
                                    f"{cols[3]!r}, not a UPOS tag")
            words.append(cols[1])
            tags.append(cols[3])
    end()
    return sentences


# --- where each task's data lives (read by the loaders and by `raysweep data`) ------------------

UD_URL = ("https://lindat.mff.cuni.cz/repository/xmlui/bitstream/handle/11234/1-3424/"
          "ud-treebanks-v2.7.tgz")


def _udpos(task: Task, split: str, language: str) -> tuple[FileData, HFData | None]:
    """Every treebank's CoNLL-U file of the language; else google/xtreme's HF copy, for the
    original XTREME languages."""
    ud_split = check_split(task, split, SPLITS)
    pattern = f"{language}_*-ud-{ud_split}.conllu"
    files = FileData((f"udpos/**/{pattern}",), "conllu", f"{UD_URL}#ud-treebanks-v2.7/*/{pattern}")
    name = UD_LANGUAGE_NAMES.get(language)
    hub = None if name is None else HFData(
        "udpos", f"udpos.{name}", check_split(task, split, {"train": "train", "validation":
                                                            "validation", "test": "test"}),
        "google/xtreme", ("tokens", "pos_tags"))
    return files, hub


def _wikiann(task: Task, split: str, language: str) -> HFData:
    return HFData("wikiann", language, check_split(task, split, {
        "train": "train", "validation": "validation", "test": "test"}), "unimelb-nlp/wikiann",
        ("tokens", "ner_tags"))


def _ccg(task: Task, split: str, language: str) -> tuple[FileData, FileData]:
    """The split's sentences and the tag inventory (CCGbank is LDC-licensed: no download)."""
    name = check_split(task, split, SPLITS)
    return FileData((f"ccg/ccg.{name}",), "tsv"), FileData(("ccg/tags_to_id.json",), "json")


def _udpos_options(task: Task, split: str, language: str) -> Options:
    files, hub = _udpos(task, split, language)
    return ((files,),) if hub is None else ((files,), (hub,))


FILES = {
    "udpos": _udpos_options,
    "wikiann": lambda t, s, lang: all_of(_wikiann(t, s, lang)),
    "ccg": lambda t, s, lang: all_of(*_ccg(t, s, lang)),
}


# --- loaders -----------------------------------------------------------------------------------


def _load_udpos(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    ud_split = check_split(task, split, SPLITS)
    root = local_dir(ctx, "udpos")
    conllu, hub_copy = _udpos(task, split, language)
    files = conllu.paths(ctx.data_dir)
    if files:
        examples = []
        for path in files:
            for k, (words, tags) in enumerate(read_conllu(path, task.name, split)):
                examples.append(TaggingExample(f"{path.stem}-{k}", words, tags))
        return Split(task.name, split, language, tuple(examples), label_names=UPOS)
    name = UD_LANGUAGE_NAMES.get(language)
    hf_copy = None if hub_copy is None else hub_copy.local(ctx)
    if hub_copy is not None and (ctx.allow_download or (hf_copy is not None and hf_copy.exists())):
        # google/xtreme's HF schema, from the hub or a save_to_disk copy at udpos/udpos.<Name>/
        rows = hf_rows(task, split, language, ctx, hub_copy)
        examples = [TaggingExample(f"udpos-{language}-{split}-{i}", tuple(r["tokens"]),
                                   tuple(UPOS[t] for t in r["pos_tags"]))
                    for i, r in enumerate(rows)]
        return Split(task.name, split, language, tuple(examples), label_names=UPOS)
    hub = f"google/xtreme (udpos.{name})" if name else None
    raise missing_data(task, split, language,
                       f"CoNLL-U files {language}_*-ud-{ud_split}.conllu under {root}", hub)


def _load_wikiann(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    src = _wikiann(task, split, language)
    hf_split = src.split
    rows = hf_rows(task, split, language, ctx, src)
    examples = []
    for i, r in enumerate(rows):
        if len(r["tokens"]) != len(r["ner_tags"]):
            raise TaskDataError(f"{where(task, split, language)}: example {i}: fields 'tokens' "
                                f"and 'ner_tags' differ in length")
        examples.append(TaggingExample(f"wikiann-{language}-{hf_split}-{i}", tuple(r["tokens"]),
                                       tuple(NER_TAGS[t] for t in r["ner_tags"])))
    return Split(task.name, split, language, tuple(examples), label_names=NER_TAGS)


CCG_NUM_TAGS = 1363  # jiant's CCG tag inventory


def _load_ccg(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    name = check_split(task, split, SPLITS)
    sentences, inventory = _ccg(task, split, language)
    path = require_file(sentences.expected(ctx.data_dir), task, split, language)
    tag_file = require_file(inventory.expected(ctx.data_dir), task, split, language)
    tags_to_id = read_json(tag_file, task.name, split)
    if not isinstance(tags_to_id, dict):
        raise TaskDataError(f"{where(task, split)}: {tag_file} must map tags to ids")
    names = tuple(t for t, _ in sorted(tags_to_id.items(), key=lambda kv: int(kv[1])))
    if sorted(int(v) for v in tags_to_id.values()) != list(range(len(names))):
        raise TaskDataError(f"{where(task, split)}: {tag_file}: ids must be 0..{len(names) - 1}")
    if len(names) > CCG_NUM_TAGS:
        raise TaskDataError(f"{where(task, split)}: {len(names)} tags > {CCG_NUM_TAGS}")
    examples = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise TaskDataError(f"{where(task, split)}: {path} line {n}: expected "
                                    "'text<TAB>tags'; field 'tags' missing")
            words, tags = tuple(parts[0].split(" ")), tuple(parts[1].split())
            if len(words) != len(tags):
                raise TaskDataError(f"{where(task, split)}: {path} line {n}: {len(words)} words "
                                    f"but {len(tags)} tags (field 'tags')")
            examples.append(TaggingExample(f"ccg-{name}-{n - 1}", words, tags))
    return Split(task.name, split, language, tuple(examples), label_names=names)


register(Task(name="udpos", category="structured", head="token_cls", metric="pos_f1",
              languages=UDPOS_LANGUAGES, roles=frozenset({"target"}),
              source="local:ud-treebanks (CoNLL-U) | hf:google/xtreme/udpos.*",
              loader=_load_udpos, train_task="udpos", num_labels=len(UPOS), label_names=UPOS,
              description="UD-POS tagging (XTREME-R structured prediction); trained on "
                          "English UD"))
register(Task(name="wikiann", category="structured", head="token_cls", metric="span_f1",
              languages=WIKIANN_LANGUAGES, roles=frozenset({"target"}),
              source="hf:unimelb-nlp/wikiann", loader=_load_wikiann, train_task="wikiann",
              num_labels=len(NER_TAGS), label_names=NER_TAGS,
              description="WikiANN (PAN-X) NER (XTREME-R structured prediction); trained on "
                          "English WikiANN"))
register(Task(name="ccg", category="structured", head="token_cls", metric="token_accuracy",
              languages=("en",), roles=frozenset({"intermediate"}),
              source="local:CCGbank supertags (jiant format)", loader=_load_ccg,
              num_labels=CCG_NUM_TAGS,
              description="CCG supertagging (tag inventory from tags_to_id.json)"))
