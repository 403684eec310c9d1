"""Extractive QA: XQuAD, MLQA, TyDiQA-GoldP (targets) and SQuAD v1.1 / v2.0 (English training
source and intermediate tasks).

Local data are the original SQuAD-format JSON files, as distributed (`{"data": [{"paragraphs":
[{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}],
"is_impossible"?}]}]}]}`), under <data_dir>:

- squad: `squad/train-v1.1.json`, `squad/dev-v1.1.json`; hub `rajpurkar/squad`
- squad_v2: `squad_v2/train-v2.0.json`, `squad_v2/dev-v2.0.json`; hub `rajpurkar/squad_v2`
- xquad: `xquad/xquad.<lang>.json` (split test); hub `google/xquad` (xquad.<lang>)
- mlqa: `mlqa/MLQA_V1/{dev,test}/{dev,test}-context-<lang>-question-<lang>.json`; hub
  `facebook/mlqa` (mlqa.<lang>.<lang>)
- tydiqa: `tydiqa/tydiqa-goldp-v1.1-train.json` (train; ids start with the language name) and
  `tydiqa/tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-<language>.json` (test, as in XTREME); hub
  `google-research-datasets/tydiqa` (secondary_task)

Hub rows have SQuAD's HF features (id, title, context, question, answers{text, answer_start});
a `save_to_disk` copy of them at `<data_dir>/<task>/<hub config>/` is read when the JSON file is
absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from raysweep.tasks.base import Answer, DataContext, SpanQAExample, Split, Task
from raysweep.tasks.registry import register
from raysweep.tasks.sources import (
    FileData,
    HFData,
    any_of,
    check_split,
    field,
    hf_rows,
    missing_data,
    read_json,
)

XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
MLQA_LANGUAGES = ("ar", "de", "en", "es", "hi", "vi", "zh")
TYDIQA_LANGUAGES = ("ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te")
TYDIQA_NAMES = {"ar": "arabic", "bn": "bengali", "en": "english", "fi": "finnish",
                "id": "indonesian", "ko": "korean", "ru": "russian", "sw": "swahili",
                "te": "telugu"}


def read_squad_json(path: Path, task: str, split: str,
                    keep: Callable[[str], bool] = lambda qid: True) -> list[SpanQAExample]:
    """Canonical examples from a SQuAD-format JSON file (v1.1 or v2.0)."""
    doc = read_json(path, task, split)
    out = []
    for a, article in enumerate(field(doc, "data", task, split, str(path))):
        where = f"{path} article {a}"
        for p, paragraph in enumerate(field(article, "paragraphs", task, split, where)):
            pwhere = f"{where} paragraph {p}"
            context = field(paragraph, "context", task, split, pwhere)
            for q, qa in enumerate(field(paragraph, "qas", task, split, pwhere)):
                qid = str(field(qa, "id", task, split, f"{pwhere} question {q}"))
                if not keep(qid):
                    continue
                qwhere = f"{pwhere} question {qid!r}"
                question = field(qa, "question", task, split, qwhere)
                answers = [] if qa.get("is_impossible") else field(qa, "answers", task, split,
                                                                     qwhere)
                out.append(SpanQAExample(qid, question, context, tuple(
                    Answer(field(x, "text", task, split, f"{qwhere} answer"),
                           int(field(x, "answer_start", task, split, f"{qwhere} answer")))
                    for x in answers)))
    return out


def _hub_examples(task: Task, split: str, language: str, ctx: DataContext, src: HFData,
                  keep: Callable[[str], bool] = lambda qid: True) -> list[SpanQAExample]:
    rows = hf_rows(task, split, language, ctx, src)
    return [SpanQAExample(r["id"], r["question"], r["context"], tuple(
        Answer(t, int(s)) for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])))
        for r in rows if keep(r["id"])]


def _from_file_or_hub(task: Task, split: str, language: str, ctx: DataContext,
                      file: FileData, hub: HFData,
                      keep: Callable[[str], bool] = lambda qid: True) -> Split:
    path = file.expected(ctx.data_dir)
    hf_copy = hub.local(ctx)
    if path is not None and path.exists():
        ex = read_squad_json(path, task.name, split, keep)
    elif ctx.allow_download or (hf_copy is not None and hf_copy.exists()):
        # the hub's HF schema, downloaded or a save_to_disk copy at <data_dir>/<task>/<config>/
        ex = _hub_examples(task, split, language, ctx, hub, keep)
    else:
        raise missing_data(task, split, language, f"the SQuAD-format file {path}",
                           f"{hub.hub_id} ({hub.config}, split {hub.split})")
    return Split(task.name, split, language, tuple(ex))


# --- where each task's data lives (read by the loaders and by `raysweep data`) ------------------
# (the SQuAD-format file, its hub dataset); a save_to_disk copy of the hub's lives at
# `<data_dir>/<task>/<hub config>/`.

QA_FIELDS = ("id", "context", "question", "answers")
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset"
TYDIQA_URL = "https://storage.googleapis.com/tydiqa/v1.1"


def _squad(task: Task, split: str, language: str) -> tuple[FileData, HFData]:
    name = check_split(task, split, {"train": "train", "validation": "dev"})
    version, hub_id, config = (("v1.1", "rajpurkar/squad", "plain_text") if task.name == "squad"
                               else ("v2.0", "rajpurkar/squad_v2", "squad_v2"))
    file = f"{name}-{version}.json"
    return (FileData((f"{task.name}/{file}",), "squad", f"{SQUAD_URL}/{file}"),
            HFData(task.name, config, "train" if split == "train" else "validation", hub_id,
                   QA_FIELDS))


def _xquad(task: Task, split: str, language: str) -> tuple[FileData, HFData]:
    check_split(task, split, {"test": "test"})
    file = f"xquad.{language}.json"
    return (FileData((f"xquad/{file}",), "squad",
                     f"https://raw.githubusercontent.com/deepmind/xquad/master/{file}"),
            HFData("xquad", f"xquad.{language}", "validation", "google/xquad", QA_FIELDS))


def _mlqa(task: Task, split: str, language: str) -> tuple[FileData, HFData]:
    name = check_split(task, split, {"validation": "dev", "test": "test"})
    member = f"MLQA_V1/{name}/{name}-context-{language}-question-{language}.json"
    return (FileData((f"mlqa/{member}",), "squad",
                     f"https://dl.fbaipublicfiles.com/MLQA/MLQA_V1.zip#{member}"),
            HFData("mlqa", f"mlqa.{language}.{language}",
                   "validation" if name == "dev" else "test", "facebook/mlqa", QA_FIELDS))


def _tydiqa(task: Task, split: str, language: str) -> tuple[FileData, HFData]:
    check_split(task, split, {"train": "train", "test": "test"})
    if split == "train":
        file = FileData(("tydiqa/tydiqa-goldp-v1.1-train.json",), "squad",
                        f"{TYDIQA_URL}/tydiqa-goldp-v1.1-train.json")
    else:
        member = f"tydiqa-goldp-v1.1-dev/tydiqa-goldp-dev-{TYDIQA_NAMES[language]}.json"
        file = FileData((f"tydiqa/{member}",), "squad",
                        f"{TYDIQA_URL}/tydiqa-goldp-v1.1-dev.tgz#{member}")
    return file, HFData("tydiqa", "secondary_task", "train" if split == "train" else "validation",
                        "google-research-datasets/tydiqa", QA_FIELDS)


SOURCES = {"squad": _squad, "squad_v2": _squad, "xquad": _xquad, "mlqa": _mlqa,
           "tydiqa": _tydiqa}
FILES = {name: lambda t, s, lang: any_of(*SOURCES[t.name](t, s, lang)) for name in SOURCES}


def _load(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    return _from_file_or_hub(task, split, language, ctx, *SOURCES[task.name](task, split, language))


def _load_tydiqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    lang_name = TYDIQA_NAMES.get(language)
    keep: Callable[[str], bool] = lambda qid: qid.split("-")[0] == lang_name
    return _from_file_or_hub(task, split, language, ctx, *_tydiqa(task, split, language), keep)


QA = dict(category="qa", head="span_qa")

register(Task(name="xquad", metric="squad", languages=XQUAD_LANGUAGES,
              roles=frozenset({"target"}), source="github:deepmind/xquad | hf:google/xquad",
              loader=_load, splits=("test",), train_task="squad",
              description="XQuAD (XTREME-R QA); trained on SQuAD v1.1", **QA))
register(Task(name="mlqa", metric="mlqa", languages=MLQA_LANGUAGES, roles=frozenset({"target"}),
              source="MLQA_V1.zip | hf:facebook/mlqa", loader=_load,
              splits=("validation", "test"), train_task="squad",
              description="MLQA, context and question in the same language (XTREME-R QA); "
                          "trained on SQuAD v1.1; MLQA's language-aware evaluation", **QA))
register(Task(name="tydiqa", metric="squad", languages=TYDIQA_LANGUAGES,
              roles=frozenset({"target"}),
              source="tydiqa-goldp-v1.1 | hf:google-research-datasets/tydiqa/secondary_task",
              loader=_load_tydiqa, splits=("train", "test"), train_task="tydiqa",
              description="TyDiQA-GoldP (XTREME-R QA); trained on its English training set; "
                          "test = the GoldP dev set, as in XTREME", **QA))
register(Task(name="squad", metric="squad", languages=("en",),
              roles=frozenset({"intermediate"}), source="SQuAD v1.1 JSON | hf:rajpurkar/squad",
              loader=_load, splits=("train", "validation"),
              description="SQuAD v1.1 (English training source for XQuAD, MLQA, LAReQA)", **QA))
register(Task(name="squad_v2", metric="squad_v2", languages=("en",),
              roles=frozenset({"intermediate"}),
              source="SQuAD v2.0 JSON | hf:rajpurkar/squad_v2", loader=_load,
              splits=("train", "validation"), description="SQuAD v2.0 (with unanswerable "
                                                          "questions)", **QA))
