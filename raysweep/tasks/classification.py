"""Sentence-pair classification: XNLI and PAWS-X (targets), MNLI, SNLI, ANLI, ANLI+ and QQP
(English intermediate tasks), and XNLI / PAWS-X translate-train (multilingual intermediate
options).

All read HF-schema data (`raysweep.tasks.sources`): `<data_dir>/<dir>/<config>/` saved with
`DatasetDict.save_to_disk`, with the hub dataset's features:

- xnli: `xnli/<lang>/`, hub `facebook/xnli` (<lang>): premise, hypothesis, label ClassLabel(3)
- xnli_translate_train: the same data; its train split is MultiNLI machine-translated into
  <lang> (XNLI-MT), validation XNLI's dev set
- pawsx: `pawsx/<lang>/`, hub `google-research-datasets/paws-x` (<lang>): id, sentence1,
  sentence2, label ClassLabel(2)
- pawsx_translate_train: the same data; PAWS-X's non-English train splits are machine
  translations of the English one
- mnli: `mnli/mnli/`, hub `nyu-mll/glue` (mnli): premise, hypothesis, label ClassLabel(3), idx;
  validation = validation_matched (validation_mismatched is its own split)
- snli: `snli/plain_text/`, hub `stanfordnlp/snli` (plain_text): premise, hypothesis, label
- anli: `anli/plain_text/`, hub `facebook/anli` (plain_text): uid, premise, hypothesis, label,
  reason; splits {train,dev,test}_r{1,2,3}, all three rounds together
- anli_plus: reads snli/, mnli/ and anli/
- qqp: `qqp/qqp/`, hub `nyu-mll/glue` (qqp): question1, question2, label ClassLabel(2), idx

NLI labels are (entailment, neutral, contradiction) in every source. Examples without a gold
label (label -1: SNLI's unlabeled pairs, GLUE test sets) are dropped.
"""

from __future__ import annotations

from raysweep.tasks.base import DataContext, PairExample, Split, Task
from raysweep.tasks.registry import register
from raysweep.tasks.sources import HFData, all_of, check_split, hf_rows

NLI_LABELS = ("entailment", "neutral", "contradiction")
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur",
                  "vi", "zh")
PAWSX_LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")
ANLI_ROUNDS = ("r1", "r2", "r3")
SPLITS = {"train": "train", "validation": "validation", "test": "test"}
PAIR_FIELDS = ("premise", "hypothesis", "label")


# --- where each task's data lives (read by the loaders and by `raysweep data`) ------------------


def _xnli(task: Task, split: str, language: str) -> HFData:
    return HFData("xnli", language, check_split(task, split, SPLITS), "facebook/xnli",
                  PAIR_FIELDS)


def _pawsx(task: Task, split: str, language: str) -> HFData:
    return HFData("pawsx", language, check_split(task, split, SPLITS),
                  "google-research-datasets/paws-x", ("id", "sentence1", "sentence2", "label"))


def _mnli(hf_split: str) -> HFData:
    return HFData("mnli", "mnli", hf_split, "nyu-mll/glue", PAIR_FIELDS + ("idx",))


def _snli(hf_split: str) -> HFData:
    return HFData("snli", "plain_text", hf_split, "stanfordnlp/snli", PAIR_FIELDS)


def _anli_rounds(task: Task, split: str) -> list[HFData]:
    prefix = check_split(task, split, {"train": "train", "validation": "dev", "test": "test"})
    return [HFData("anli", "plain_text", f"{prefix}_{r}", "facebook/anli",
                   ("uid",) + PAIR_FIELDS) for r in ANLI_ROUNDS]


def _qqp(task: Task, split: str) -> HFData:
    return HFData("qqp", "qqp", check_split(task, split, {"train": "train",
                                                          "validation": "validation"}),
                  "nyu-mll/glue", ("question1", "question2", "label", "idx"))


MNLI_SPLITS = {"train": "train", "validation": "validation_matched",
               "validation_mismatched": "validation_mismatched"}

FILES = {
    "xnli": lambda t, s, lang: all_of(_xnli(t, s, lang)),
    "xnli_translate_train": lambda t, s, lang: all_of(_xnli(t, s, lang)),
    "pawsx": lambda t, s, lang: all_of(_pawsx(t, s, lang)),
    "pawsx_translate_train": lambda t, s, lang: all_of(_pawsx(t, s, lang)),
    "mnli": lambda t, s, lang: all_of(_mnli(check_split(t, s, MNLI_SPLITS))),
    "snli": lambda t, s, lang: all_of(_snli(check_split(t, s, SPLITS))),
    "anli": lambda t, s, lang: all_of(*_anli_rounds(t, s)),
    "anli_plus": lambda t, s, lang: all_of(*_anli_rounds(t, s), *(
        (_snli("train"), _mnli("train")) if s == "train" else ())),
    "qqp": lambda t, s, lang: all_of(_qqp(t, s)),
}


# --- loaders -----------------------------------------------------------------------------------


def _pairs(task: Task, split: str, language: str, rows, a: str, b: str, prefix: str = "",
           id_field: str | None = None) -> list[PairExample]:
    out = []
    for i, row in enumerate(rows):
        label = row["label"]
        if label is None or int(label) < 0:
            continue
        rid = row[id_field] if id_field else i
        out.append(PairExample(f"{prefix}{rid}", row[a], row[b], int(label)))
    return out


def _load_xnli(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    rows = hf_rows(task, split, language, ctx, _xnli(task, split, language))
    ex = _pairs(task, split, language, rows, "premise", "hypothesis", f"xnli-{language}-{split}-")
    return Split(task.name, split, language, tuple(ex))


def _load_pawsx(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    rows = hf_rows(task, split, language, ctx, _pawsx(task, split, language))
    ex = _pairs(task, split, language, rows, "sentence1", "sentence2", f"pawsx-{language}-",
                id_field="id")
    return Split(task.name, split, language, tuple(ex))


def _load_mnli(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    hf_split = check_split(task, split, MNLI_SPLITS)
    rows = hf_rows(task, split, language, ctx, _mnli(hf_split))
    ex = _pairs(task, split, language, rows, "premise", "hypothesis", f"mnli-{hf_split}-", "idx")
    return Split(task.name, split, language, tuple(ex))


def _load_snli(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    hf_split = check_split(task, split, SPLITS)
    rows = hf_rows(task, split, language, ctx, _snli(hf_split))
    ex = _pairs(task, split, language, rows, "premise", "hypothesis", f"snli-{hf_split}-")
    return Split(task.name, split, language, tuple(ex))


def _anli_examples(task, split, language, ctx) -> list[PairExample]:
    ex: list[PairExample] = []
    for src in _anli_rounds(task, split):  # all three rounds, as ANLI is used in the seed study
        rows = hf_rows(task, split, language, ctx, src)
        ex += _pairs(task, split, language, rows, "premise", "hypothesis", "anli-", "uid")
    return ex


def _load_anli(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    return Split(task.name, split, language, tuple(_anli_examples(task, split, language, ctx)))


def _load_anli_plus(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    """ANLI+ (the seed study's): train = SNLI + MNLI + ANLI (R1-R3) train; validation and test
    are ANLI's (R1-R3)."""
    ex = _anli_examples(task, split, language, ctx)
    if split == "train":
        snli = _pairs(task, split, language, hf_rows(task, split, language, ctx, _snli("train")),
                      "premise", "hypothesis", "snli-train-")
        mnli = _pairs(task, split, language, hf_rows(task, split, language, ctx, _mnli("train")),
                      "premise", "hypothesis", "mnli-train-", "idx")
        ex = snli + mnli + ex
    return Split(task.name, split, language, tuple(ex))


def _load_qqp(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    src = _qqp(task, split)
    rows = hf_rows(task, split, language, ctx, src)
    ex = _pairs(task, split, language, rows, "question1", "question2", f"qqp-{src.split}-", "idx")
    return Split(task.name, split, language, tuple(ex))


NLI = dict(category="classification", head="seq_cls", metric="accuracy", num_labels=3,
           label_names=NLI_LABELS)

register(Task(name="xnli", languages=XNLI_LANGUAGES, roles=frozenset({"target"}),
              source="hf:facebook/xnli", loader=_load_xnli, train_task="mnli",
              description="XNLI: cross-lingual NLI (XTREME-R classification)", **NLI))
register(Task(name="xnli_translate_train", languages=XNLI_LANGUAGES,
              roles=frozenset({"intermediate"}), source="hf:facebook/xnli (train = MT MultiNLI)",
              loader=_load_xnli, splits=("train", "validation"), train_languages=XNLI_LANGUAGES,
              description="XNLI translate-train: MultiNLI machine-translated into each XNLI "
                          "language (multilingual intermediate option)", **NLI))
register(Task(name="pawsx", category="classification", head="seq_cls", metric="accuracy",
              languages=PAWSX_LANGUAGES, roles=frozenset({"target"}),
              source="hf:google-research-datasets/paws-x", loader=_load_pawsx,
              train_task="pawsx", num_labels=2, label_names=("0", "1"),
              description="PAWS-X paraphrase identification (original XTREME); trained on its "
                          "English train split"))
register(Task(name="pawsx_translate_train", category="classification", head="seq_cls",
              metric="accuracy", languages=PAWSX_LANGUAGES, roles=frozenset({"intermediate"}),
              source="hf:google-research-datasets/paws-x (train = MT PAWS)",
              loader=_load_pawsx, splits=("train", "validation"), num_labels=2,
              label_names=("0", "1"), train_languages=PAWSX_LANGUAGES,
              description="PAWS-X translate-train: the English PAWS train set machine-translated "
                          "into each PAWS-X language (multilingual intermediate option)"))
register(Task(name="mnli", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:nyu-mll/glue/mnli", loader=_load_mnli,
              splits=("train", "validation", "validation_mismatched"),
              description="MultiNLI (validation = matched)", **NLI))
register(Task(name="snli", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:stanfordnlp/snli", loader=_load_snli, description="SNLI", **NLI))
register(Task(name="anli", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:facebook/anli", loader=_load_anli,
              description="Adversarial NLI, rounds 1-3 together", **NLI))
register(Task(name="anli_plus", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:stanfordnlp/snli + hf:nyu-mll/glue/mnli + hf:facebook/anli",
              loader=_load_anli_plus,
              description="ANLI+: SNLI + MNLI + ANLI R1-R3 train; ANLI dev/test", **NLI))
register(Task(name="qqp", category="classification", head="seq_cls", metric="accuracy",
              languages=("en",), roles=frozenset({"intermediate"}), source="hf:nyu-mll/glue/qqp",
              loader=_load_qqp, splits=("train", "validation"), num_labels=2,
              label_names=("not_duplicate", "duplicate"), description="Quora Question Pairs"))
