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
    check_split,
    field,
    hf_rows,
    local_dir,
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


def _hub_examples(task: Task, split: str, language: str, ctx: DataContext, hub_id: str,
                  config: str | None, hf_split: str,
                  keep: Callable[[str], bool] = lambda qid: True) -> list[SpanQAExample]:
    rows = hf_rows(task, split, language, ctx, dirname=task.name, config=config,
                   hf_split=hf_split, hub_id=hub_id,
                   fields=("id", "context", "question", "answers"))
    return [SpanQAExample(r["id"], r["question"], r["context"], tuple(
        Answer(t, int(s)) for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])))
        for r in rows if keep(r["id"])]


def _from_file_or_hub(task: Task, split: str, language: str, ctx: DataContext,
                      path: Path | None, hub_id: str, config: str | None, hf_split: str,
                      keep: Callable[[str], bool] = lambda qid: True) -> Split:
    root = local_dir(ctx, task.name)
    hf_copy = None if root is None else root / (config or "default")
    if path is not None and path.exists():
        ex = read_squad_json(path, task.name, split, keep)
    elif ctx.allow_download or (hf_copy is not None and hf_copy.exists()):
        # the hub's HF schema, downloaded or a save_to_disk copy at <data_dir>/<task>/<config>/
        ex = _hub_examples(task, split, language, ctx, hub_id, config, hf_split, keep)
    else:
        raise missing_data(task, split, language, f"the SQuAD-format file {path}",
                           f"{hub_id} ({config}, split {hf_split})")
    return Split(task.name, split, language, tuple(ex))


def _path(ctx: DataContext, *parts: str) -> Path | None:
    root = local_dir(ctx, parts[0])
    return None if root is None else root.joinpath(*parts[1:])


def _load_squad(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    name = check_split(task, split, {"train": "train", "validation": "dev"})
    return _from_file_or_hub(task, split, language, ctx,
                             _path(ctx, "squad", f"{name}-v1.1.json"), "rajpurkar/squad",
                             "plain_text", "train" if split == "train" else "validation")


def _load_squad_v2(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    name = check_split(task, split, {"train": "train", "validation": "dev"})
    return _from_file_or_hub(task, split, language, ctx,
                             _path(ctx, "squad_v2", f"{name}-v2.0.json"), "rajpurkar/squad_v2",
                             "squad_v2", "train" if split == "train" else "validation")


def _load_xquad(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    check_split(task, split, {"test": "test"})
    return _from_file_or_hub(task, split, language, ctx,
                             _path(ctx, "xquad", f"xquad.{language}.json"), "google/xquad",
                             f"xquad.{language}", "validation")


def _load_mlqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    name = check_split(task, split, {"validation": "dev", "test": "test"})
    return _from_file_or_hub(
        task, split, language, ctx,
        _path(ctx, "mlqa", "MLQA_V1", name, f"{name}-context-{language}-question-{language}.json"),
        "facebook/mlqa", f"mlqa.{language}.{language}", "validation" if name == "dev" else "test")


def _load_tydiqa(task: Task, split: str, language: str, ctx: DataContext) -> Split:
    check_split(task, split, {"train": "train", "test": "test"})
    lang_name = TYDIQA_NAMES[language]
    keep: Callable[[str], bool] = lambda qid: qid.split("-")[0] == lang_name
    if split == "train":
        path = _path(ctx, "tydiqa", "tydiqa-goldp-v1.1-train.json")
    else:
        path = _path(ctx, "tydiqa", "tydiqa-goldp-v1.1-dev",
                     f"tydiqa-goldp-dev-{lang_name}.json")
    return _from_file_or_hub(task, split, language, ctx, path,
                             "google-research-datasets/tydiqa", "secondary_task",
                             "train" if split == "train" else "validation", keep)


QA = dict(category="qa", head="span_qa")

register(Task(name="xquad", metric="squad", languages=XQUAD_LANGUAGES,
              roles=frozenset({"target"}), source="github:deepmind/xquad | hf:google/xquad",
              loader=_load_xquad, splits=("test",), train_task="squad",
              description="XQuAD (XTREME-R QA); trained on SQuAD v1.1", **QA))
register(Task(name="mlqa", metric="mlqa", languages=MLQA_LANGUAGES, roles=frozenset({"target"}),
              source="MLQA_V1.zip | hf:facebook/mlqa", loader=_load_mlqa,
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
              loader=_load_squad, splits=("train", "validation"),
              description="SQuAD v1.1 (English training source for XQuAD, MLQA, LAReQA)", **QA))
register(Task(name="squad_v2", metric="squad_v2", languages=("en",),
              roles=frozenset({"intermediate"}),
              source="SQuAD v2.0 JSON | hf:rajpurkar/squad_v2", loader=_load_squad_v2,
              splits=("train", "validation"), description="SQuAD v2.0 (with unanswerable "
                                                          "questions)", **QA))
