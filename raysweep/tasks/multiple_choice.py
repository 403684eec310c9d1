"""Multiple choice: XCOPA (target; trained on SIQa then COPA, as in XTREME-R), COPA, SIQa,
HellaSwag, CommonsenseQA and Cosmos QA (English intermediate tasks).

HF-schema data (`raysweep.tasks.sources`), `<data_dir>/<task>/<config>/` from `save_to_disk`:

- xcopa: `xcopa/<lang>/`, hub `cambridgeltl/xcopa` (<lang>): premise, choice1, choice2,
  question, label, idx, changed
- copa: `copa/copa/`, hub `aps/super_glue` (copa): premise, choice1, choice2, question, idx,
  label ClassLabel(choice1, choice2)
- siqa: `siqa/default/`, hub `allenai/social_i_qa`: context, question, answerA/B/C, label "1".."3"
- hellaswag: `hellaswag/default/`, hub `Rowan/hellaswag`: ind, activity_label, ctx_a, ctx_b, ctx,
  endings, source_id, split, split_type, label "0".."3"
- commonsenseqa: `commonsenseqa/default/`, hub `tau/commonsense_qa`: id, question,
  question_concept, choices{label, text}, answerKey
- cosmosqa: `cosmosqa/default/`, hub `allenai/cosmos_qa`: id, context, question,
  answer0..answer3, label

COPA-style premises become a context with jiant's question for the relation ("What was the cause
of this?" / "What happened as a result?"). Unlabeled examples (test splits) are dropped.
"""

from __future__ import annotations

from raysweep.tasks.base import ChoiceExample, DataContext, Split, Task, TaskDataError
from raysweep.tasks.registry import register
from raysweep.tasks.sources import HFData, all_of, check_split, hf_rows, where

XCOPA_LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
COPA_QUESTIONS = {"cause": "What was the cause of this?", "effect": "What happened as a result?"}
SPLITS = {"train": "train", "validation": "validation", "test": "test"}


def _copa_examples(task, split, rows, prefix) -> list[ChoiceExample]:
    out = []
    for row in rows:
        if row["label"] is None or int(row["label"]) < 0:
            continue
        if row["question"] not in COPA_QUESTIONS:
            raise TaskDataError(f"{where(task, split)}: field 'question' must be 'cause' or "
                                f"'effect', got {row['question']!r}")
        out.append(ChoiceExample(f"{prefix}{row['idx']}",
                                 f"{row['premise']} {COPA_QUESTIONS[row['question']]}",
                                 (row["choice1"], row["choice2"]), int(row["label"])))
    return out


COPA_FIELDS = ("premise", "choice1", "choice2", "question", "label", "idx")


# Where each task's data lives (read by the loaders and by `raysweep data`): `<dir>/<config>/`.
# task -> (dir, config: None = "default", or "<lang>" = the language, hub id, splits, fields)
HF = {
    "xcopa": ("xcopa", "<lang>", "cambridgeltl/xcopa",
              {"validation": "validation", "test": "test"}, COPA_FIELDS),
    "copa": ("copa", "copa", "aps/super_glue", SPLITS, COPA_FIELDS),
    "siqa": ("siqa", None, "allenai/social_i_qa", {"train": "train", "validation": "validation"},
             ("context", "question", "answerA", "answerB", "answerC", "label")),
    "hellaswag": ("hellaswag", None, "Rowan/hellaswag", SPLITS, ("ind", "ctx", "endings", "label")),
    "commonsenseqa": ("commonsenseqa", None, "tau/commonsense_qa", SPLITS,
                      ("id", "question", "choices", "answerKey")),
    "cosmosqa": ("cosmosqa", None, "allenai/cosmos_qa", SPLITS,
                 ("id", "context", "question", "answer0", "answer1", "answer2", "answer3",
                  "label")),
}


def _data(task: Task, split: str, language: str) -> HFData:
    dirname, config, hub_id, splits, fields = HF[task.name]
    return HFData(dirname, language if config == "<lang>" else config,
                  check_split(task, split, splits), hub_id, fields)


FILES = {name: lambda t, s, lang: all_of(_data(t, s, lang)) for name in HF}


def _rows(task: Task, split: str, language: str, ctx: DataContext):
    """(the hub's split name, the rows)."""
    src = _data(task, split, language)
    return src.split, hf_rows(task, split, language, ctx, src)


def _load_xcopa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    hf_split, rows = _rows(task, split, language, ctx)
    ex = _copa_examples(task, split, rows, f"xcopa-{language}-{hf_split}-")
    return Split(task.name, split, language, tuple(ex))


def _load_copa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    hf_split, rows = _rows(task, split, language, ctx)
    return Split(task.name, split, language,
                 tuple(_copa_examples(task, split, rows, f"copa-{hf_split}-")))


def _load_siqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    hf_split, rows = _rows(task, split, language, ctx)
    out = []
    for i, row in enumerate(rows):
        if not str(row["label"]).strip():
            continue
        label = int(row["label"]) - 1  # "1".."3"
        out.append(ChoiceExample(f"siqa-{hf_split}-{i}", f"{row['context']} {row['question']}",
                                 (row["answerA"], row["answerB"], row["answerC"]), label))
    return Split(task.name, split, language, tuple(out))


def _load_hellaswag(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    hf_split, rows = _rows(task, split, language, ctx)
    out = []
    for row in rows:
        if not str(row["label"]).strip():
            continue
        out.append(ChoiceExample(f"hellaswag-{hf_split}-{row['ind']}", row["ctx"],
                                 tuple(row["endings"]), int(row["label"])))
    return Split(task.name, split, language, tuple(out))


def _load_commonsenseqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    _, rows = _rows(task, split, language, ctx)
    out = []
    for row in rows:
        if not row["answerKey"]:
            continue
        keys = list(row["choices"]["label"])
        if row["answerKey"] not in keys:
            raise TaskDataError(f"{where(task, split)}: example {row['id']!r}: field "
                                f"'answerKey' {row['answerKey']!r} is not among {keys}")
        out.append(ChoiceExample(row["id"], row["question"], tuple(row["choices"]["text"]),
                                 keys.index(row["answerKey"])))
    return Split(task.name, split, language, tuple(out))


def _load_cosmosqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    _, rows = _rows(task, split, language, ctx)
    out = []
    for row in rows:
        if row["label"] is None or int(row["label"]) < 0:
            continue
        out.append(ChoiceExample(row["id"], f"{row['context']} {row['question']}",
                                 tuple(row[f"answer{k}"] for k in range(4)), int(row["label"])))
    return Split(task.name, split, language, tuple(out))


MC = dict(category="classification", head="multiple_choice", metric="accuracy")

register(Task(name="xcopa", languages=XCOPA_LANGUAGES, roles=frozenset({"target"}),
              source="hf:cambridgeltl/xcopa", loader=_load_xcopa, splits=("validation", "test"),
              train_task="copa", train_tasks=("siqa", "copa"), num_labels=2,
              description="XCOPA causal commonsense reasoning (XTREME-R classification); "
                          "trained on SIQa, then COPA", **MC))
register(Task(name="copa", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:aps/super_glue/copa", loader=_load_copa, num_labels=2,
              description="COPA (SuperGLUE)", **MC))
register(Task(name="siqa", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:allenai/social_i_qa", loader=_load_siqa, splits=("train", "validation"),
              num_labels=3, description="Social IQa", **MC))
register(Task(name="hellaswag", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:Rowan/hellaswag", loader=_load_hellaswag, num_labels=4,
              description="HellaSwag", **MC))
register(Task(name="commonsenseqa", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:tau/commonsense_qa", loader=_load_commonsenseqa, num_labels=5,
              description="CommonsenseQA", **MC))
register(Task(name="cosmosqa", languages=("en",), roles=frozenset({"intermediate"}),
              source="hf:allenai/cosmos_qa", loader=_load_cosmosqa, num_labels=4,
              description="Cosmos QA", **MC))
