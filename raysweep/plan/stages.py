"""One typed, frozen config per stage kind, and the key that names its output.

A stage's key hashes its whole config (every field, plus the stage kind, the store format and
the data directory): two trials that agree on all of it get the same key, and so share one
output in the stage store. A stage names its input by the key of its parent stage (`parent`), or,
for the first stage of a trial, by the identity of the model it starts from (`model`), so any
change upstream changes every key downstream.

Each config is built in one place (`raysweep.plan.build`), from the space, whose pydantic models
hold every default; a config has no defaults of its own, so a missing field fails when the plan
is built, on the driver, not inside a Ray worker.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

# Bump when a change to the training code changes what a stage computes, so that old outputs
# are not reused for new code. (Part of every key.)
STAGE_FORMAT = 1


def neutral(value: Any) -> Any:
    """Mark a field whose `value` means "as before the field existed": at that value it is left
    out of the key, so outputs stored before the field was added keep their names. (Metadata
    only: the field still has no default.)"""
    return field(metadata={"neutral": value})


def stage_key(config: dict[str, Any]) -> str:
    """Hash of a whole normalized config (sorted keys, JSON): what determines the output."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class StageConfig:
    """Fields every stage has. `kind` names the stage; `stored` stages are shared through the
    stage store, the others run inside their trial."""

    kind: ClassVar[str]
    stored: ClassVar[bool]

    def __init_subclass__(cls, kind: str | None = None, stored: bool = False, **kw) -> None:
        super().__init_subclass__(**kw)
        if kind is not None:  # a concrete stage kind (the shared bases name none)
            cls.kind, cls.stored = kind, stored

    data_dir: str | None
    parent: str | None  # the parent stage's key, or None for a trial's first stage
    model: dict[str, Any] | None  # the starting model's identity (first stage only)

    def key_dict(self) -> dict[str, Any]:
        """What the key hashes: the kind, the store format and every field (the parent key or
        the model identity, whichever applies)."""
        fields = dataclasses.asdict(self)
        for name in ("parent", "model"):
            if fields[name] is None:
                del fields[name]
        for f in dataclasses.fields(self):
            if "neutral" in f.metadata and fields[f.name] == f.metadata["neutral"]:
                del fields[f.name]
        return {"stage": self.kind, "format": STAGE_FORMAT, **fields}

    @property
    def key(self) -> str:
        return stage_key(self.key_dict())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "StageConfig":
        d = dict(d)
        return STAGE_CONFIGS[d.pop("kind")](**d)


@dataclass(frozen=True)
class TrainingConfig(StageConfig):
    """What every training stage shares: the optimizer's budget and the batches."""

    lr: float
    steps: int
    batch_size: int  # global: every rank takes an equal slice
    max_length: int
    log_every: int
    seed: int
    # How the step is computed, not what it computes (up to rounding); each is left out of the
    # key at its neutral value, which is how every stage ran before it existed.
    precision: str = neutral("fp32")  # "fp32" | "bf16" (resolved from the space's "auto")
    activation_checkpointing: str = neutral("none")  # "none" | "full" | "selective"
    micro_batch_size: int | None = neutral(None)  # per rank; None = the whole per-rank batch
    lora: dict[str, Any] | None = neutral(None)  # {r, alpha, dropout, target_modules}; None = full


@dataclass(frozen=True)
class PretrainConfig(TrainingConfig, kind="pretrain", stored=True):
    """Causal-LM pretraining of a from-scratch (tiny) model on a corpus task."""

    corpus: str


@dataclass(frozen=True)
class IntermediateConfig(TrainingConfig, kind="intermediate", stored=True):
    """Multi-task training on a mixture of intermediate tasks."""

    mixture: dict[str, float]  # task -> weight, sorted by task
    sampler: str | dict[str, Any]  # a strategy name, or {name: params} (raysweep.spec.mixtures)
    warmup_frac: float


@dataclass(frozen=True)
class TargetConfig(TrainingConfig, kind="target", stored=False):
    """Fine-tuning each target task on its English training source, scoring English dev every
    `eval_every` steps (what Tune sees)."""

    tasks: list[str]
    warmup_frac: float
    eval_every: int


@dataclass(frozen=True)
class EvalConfig(StageConfig, kind="eval", stored=False):
    """Zero-shot evaluation of each fine-tuned target task on its languages' test sets."""

    languages: dict[str, list[str]]  # target task -> languages
    batch_size: int
    max_examples: int | None  # per (task, language, split), for quick runs


STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    c.kind: c for c in (PretrainConfig, IntermediateConfig, TargetConfig, EvalConfig)}
