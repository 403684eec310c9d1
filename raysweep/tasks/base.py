"""The task interface: canonical example types, the `Task` record, and `Split`.

Every task, real (XNLI read from its HF schema) or synthetic (the offline world), is seen by the
engine only through this module: a `Task` says which head and metric it needs, and `Task.load`
returns a `Split` of canonical examples. Tokenization happens later, in the head's encoder
(`raysweep.tasks.encoding`), with the model's own tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Union

Category = Literal["classification", "structured", "qa", "retrieval", "lm"]
HeadKind = Literal["seq_cls", "multiple_choice", "token_cls", "span_qa", "retrieval", "causal_lm"]
Role = Literal["target", "intermediate", "pretrain"]


# --- canonical examples -------------------------------------------------------------------------


@dataclass(frozen=True)
class PairExample:
    """Single-sentence or sentence-pair classification (XNLI, PAWS-X, MNLI, QQP)."""

    id: str
    text_a: str
    text_b: str | None
    label: int


@dataclass(frozen=True)
class ChoiceExample:
    """Multiple choice (XCOPA, COPA, SIQa, HellaSwag, CommonsenseQA, Cosmos QA)."""

    id: str
    context: str
    choices: tuple[str, ...]
    label: int


@dataclass(frozen=True)
class TaggingExample:
    """Word-level tagging (UD-POS, WikiANN-NER, CCG). Tags are strings, as in the sources."""

    id: str
    words: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the context


@dataclass(frozen=True)
class SpanQAExample:
    """Extractive QA (SQuAD, XQuAD, MLQA, TyDiQA-GoldP)."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class RetrievalExample:
    """A query and the ids of its relevant candidates in the split's candidate pool."""

    id: str
    query: str
    relevant: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    id: str
    text: str


@dataclass(frozen=True)
class TextExample:
    """Plain text for the causal-LM objective (pretraining corpus, multilingual LM mixing)."""

    id: str
    text: str


Example = Union[
    PairExample, ChoiceExample, TaggingExample, SpanQAExample, RetrievalExample, TextExample
]


@dataclass(frozen=True)
class Split:
    """One (task, split, language) slice. `candidates` is the retrieval pool (retrieval only)."""

    task: str
    split: str  # train | validation | test
    language: str  # ISO code, or "all" for a training stream pooled over languages
    examples: tuple[Example, ...]
    candidates: tuple[Candidate, ...] = ()
    # The tag inventory, where the data defines it (CCG's tags_to_id.json); else the task's.
    label_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)


# --- where data comes from ----------------------------------------------------------------------


@dataclass(frozen=True)
class DataContext:
    """What a loader may look at. Nothing here downloads unless `allow_download` is set.

    `data_dir`: a local directory holding files in the source's own schema (fixtures in tests,
    a cache on a cluster). `world`: the synthetic world's normalized config (a plain dict, so it
    hashes into stage keys). `seed`: for loaders that subsample.
    """

    data_dir: Path | None = None
    world: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    allow_download: bool = False


class TaskDataError(ValueError):
    """A dataset is missing, a language unknown, or a record lacks a field. The message names
    the task, split and field, so a user can fix the input."""


Loader = Callable[["Task", str, str, DataContext], Split]


@dataclass(frozen=True)
class Task:
    """A registered task. `load(split, language, ctx)` is the one way to get its examples."""

    name: str
    category: Category
    head: HeadKind
    metric: str  # a key of raysweep.tasks.metrics.METRICS
    languages: tuple[str, ...]
    roles: frozenset[Role]
    source: str  # human-readable: "hf:xnli", "local:ud", "synthetic:world"
    loader: Loader = field(repr=False, compare=False)
    splits: tuple[str, ...] = ("train", "validation", "test")
    train_task: str | None = None  # the English training source for a target (xnli -> mnli)
    num_labels: int | None = None
    label_names: tuple[str, ...] = ()
    description: str = ""
    # All English training sources, in training order, where there are several (XCOPA: SIQa,
    # then COPA); `train_task` is the last of them. Empty when `train_task` says it all.
    train_tasks: tuple[str, ...] = ()
    # Languages whose train split the engine trains on: English for the zero-shot protocol;
    # every language for translate-train tasks and multilingual LM objectives.
    train_languages: tuple[str, ...] = ("en",)

    def load(self, split: str, language: str, ctx: DataContext | None = None) -> Split:
        ctx = ctx or DataContext()
        if language not in self.languages:
            raise TaskDataError(
                f"task {self.name!r}: unknown language {language!r} for split {split!r}; "
                f"allowed: {', '.join(self.languages)}"
            )
        if split not in self.splits:
            raise TaskDataError(
                f"task {self.name!r}: unknown split {split!r}; allowed: {', '.join(self.splits)}"
            )
        return self.loader(self, split, language, ctx)
