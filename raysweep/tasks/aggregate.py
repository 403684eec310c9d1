"""XTREME-R's aggregate scores, reported only when they mean what the benchmark's do.

XTREME's `evaluate.py` (`evaluate`, "Display logic") scores a task as the mean of its metric over
all of the task's languages (a missing language file is an error there), shows the overall score
(`all_task`, the unweighted mean over tasks) only when every task of the benchmark is there, and
a group's score only when every task of the group is there. raysweep follows that rule and
labels everything else as partial instead of dropping it:

- `xtreme_r`: the mean over XTREME-R's ten tasks, when all ten are scored in every one of their
  languages; else `xtreme_r_partial[<tasks>]`.
- `xtreme_r/<category>` (classification, structured, qa, retrieval; the categories of the
  XTREME-R paper, Table 1): the same rule over the category's tasks; else
  `xtreme_r_partial/<category>[<tasks>]`.
- `<tasks>` lists the tasks averaged, in benchmark order, comma-separated; a task scored in only
  some of its languages is written `task(NofM)` (N scored of its M languages).
- The synthetic world's analogues (`syn_*`) are a benchmark of their own, never mixed with the
  real tasks: `xtreme_r_syn` over syn_xnli, syn_xcopa (classification), syn_ner (structured),
  syn_xquad (qa), syn_tatoeba (retrieval), with the same rule and names (`xtreme_r_syn`,
  `xtreme_r_syn/<category>`, `xtreme_r_syn_partial[...]`, `xtreme_r_syn_partial/<category>[...]`).
  `syn_xnli_translate` (translate-train, not zero-shot) is not part of it.

Every aggregate name starts with `xtreme_r` (`is_aggregate`). Other tasks (PAWS-X, BUCC, any
target outside the two benchmarks) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

AGGREGATE_PREFIX = "xtreme_r"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's name (the aggregates' prefix) and its tasks with their categories, in the
    benchmark's order."""

    name: str
    tasks: tuple[tuple[str, str], ...]  # (task, category)

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(c for _, c in self.tasks))


# XTREME-R's ten tasks and their categories (Ruder et al., 2021, Table 1). XTREME's evaluate.py
# groups retrieval as [tatoeba, mewslix] only (LAReQA has no languages there, so its script can
# never show an overall score); raysweep follows the paper's table.
XTREME_R = Benchmark("xtreme_r", (
    ("xnli", "classification"), ("xcopa", "classification"),
    ("udpos", "structured"), ("wikiann", "structured"),
    ("xquad", "qa"), ("mlqa", "qa"), ("tydiqa", "qa"),
    ("tatoeba", "retrieval"), ("mewslix", "retrieval"), ("lareqa", "retrieval"),
))
XTREME_R_SYN = Benchmark("xtreme_r_syn", (
    ("syn_xnli", "classification"), ("syn_xcopa", "classification"),
    ("syn_ner", "structured"), ("syn_xquad", "qa"), ("syn_tatoeba", "retrieval"),
))
BENCHMARKS = (XTREME_R, XTREME_R_SYN)


def is_aggregate(task: str) -> bool:
    """Whether a metrics-table task name is an aggregate (of either benchmark), not a task."""
    return task.startswith(AGGREGATE_PREFIX)


def _registered_languages(tasks: Sequence[str]) -> dict[str, tuple[str, ...]]:
    from raysweep.tasks.registry import all_tasks

    registered = all_tasks()
    return {t: registered[t].languages for t in tasks if t in registered}


def xtreme_r_aggregate(scores: Mapping[str, Mapping[str, float]],
                       benchmarks: Sequence[Benchmark] = BENCHMARKS,
                       languages: Mapping[str, Sequence[str]] | None = None) -> dict[str, float]:
    """The aggregates of `scores[task][language]` = that language's primary score (`primary`:
    a QA language already scores (EM + F1) / 2, and the mean over languages of (EM + F1) / 2
    equals (mean EM + mean F1) / 2). Each task scores its mean over its scored languages, English
    included, as XTREME-R does. `languages[task]`: the languages a task needs to count as
    complete (default: the registered task's). See the module docstring for the names."""
    out: dict[str, float] = {}
    for bench in benchmarks:
        task_score = {t: sum(scores[t].values()) / len(scores[t])
                      for t, _ in bench.tasks if scores.get(t)}
        if not task_score:
            continue
        langs = (_registered_languages([t for t, _ in bench.tasks]) if languages is None
                 else languages)
        label = {}
        for t in task_score:
            need = set(langs.get(t, ()))
            have = len(need & set(scores[t])) if need else len(scores[t])
            label[t] = t if have >= len(need) else f"{t}({have}of{len(need)})"
        complete = {t for t in task_score if label[t] == t}

        def add(members: list[str], whole: str, partial: str) -> None:
            present = [t for t in members if t in task_score]
            if not present:
                return
            mean = sum(task_score[t] for t in present) / len(present)
            if all(t in complete for t in members):
                out[whole] = mean
            else:
                out[f"{partial}[{','.join(label[t] for t in present)}]"] = mean

        add([t for t, _ in bench.tasks], bench.name, f"{bench.name}_partial")
        for category in bench.categories:
            add([t for t, c in bench.tasks if c == category], f"{bench.name}/{category}",
                f"{bench.name}_partial/{category}")
    return out
