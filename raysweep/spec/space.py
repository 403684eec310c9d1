"""The search space's typed form: pydantic models of a space's YAML, with every default a
space has (one home for each).

Every check that can fail on user input happens in this package, before Ray starts: unknown
keys and wrong types here (pydantic), names, ranges and resources in `check`, the file itself in
`load`. Each failure is one `SpaceError` naming the file, the key path and what is allowed; the
CLI turns it into exit status 2.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from raysweep.spec.mixtures import SimplexSpec, Strategy
from raysweep.spec.names import NO_MIXTURE

SEARCHED = ("lr_pretrain", "lr_intermediate", "lr_target", "mixture", "seed", "lora_r")
# Linear warm-up over this fraction of a stage's steps (intermediate and target stages set it per
# stage; pretraining always uses it).
WARMUP_FRAC = 0.1


class SpaceError(ValueError):
    """Bad user input in a search space: message = file: key.path: problem; allowed."""

    def __init__(self, file: str | Path, path: str, problem: str):
        self.file, self.path, self.problem = str(file), path, problem
        super().__init__(f"{file}: {path}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
# "auto": bf16 on GPU (FSDP2 mixed precision, fp32 gradient reduction), fp32 on CPU.
Precision = Literal["auto", "bf16", "fp32"]
# Per transformer block, applied before sharding: "full" recomputes every block in backward,
# "selective" every other block.
Checkpointing = Literal["none", "full", "selective"]


# CPUs a worker holds. A fraction lets workers share a core: two 2-rank trials of a tiny model on
# 2 cores at 0.5 each overlap their Train start-ups, which cost more than their steps. A worker
# runs max(1, floor(cpus)) torch threads (`threads_for`).
CpuShare = Annotated[int | float, Field(gt=0)]


def threads_for(cpus: int | float) -> int:
    return max(1, int(cpus))


class ModelSpec(_Strict):
    """One point on the scaling axis: a named tiny config (CPU), or an HF id / local path."""

    name: str
    tiny: str | None = None
    hf: str | None = None
    n_params: PositiveInt | None = None  # required for hf models; computed for tiny ones
    workers: PositiveInt | None = None  # overrides resources.workers
    cpus_per_worker: CpuShare | None = None
    gpus_per_worker: Annotated[int, Field(ge=0)] | None = None
    pretrain_steps: PositiveInt | None = None  # overrides the tiny config's budget
    precision: Precision | None = None  # overrides the space's
    activation_checkpointing: Checkpointing | None = None  # overrides the space's
    # Overrides the intermediate and target stages' `finetune` for this size (e.g. LoRA for the
    # one size whose full fine-tuning would not fit).
    finetune: Literal["full"] | LoraFinetune | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.tiny is None) == (self.hf is None):
            raise ValueError("give exactly one of 'tiny' (a named tiny config) or 'hf' (an id or path)")
        if self.hf is not None and self.n_params is None:
            raise ValueError("an 'hf' model needs 'n_params' (parameter count)")
        return self


class LoraSpec(_Strict):
    r: PositiveInt = 8  # searched as `lora_r` when the search names it
    alpha: PositiveFloat = 16.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: Annotated[list[str], Field(min_length=1)] = [
        "q_proj", "k_proj", "v_proj", "o_proj"]


class LoraFinetune(_Strict):
    lora: LoraSpec


class PretrainSpec(_Strict):
    corpus: str
    lr: PositiveFloat = 3e-3
    batch_size: PositiveInt = 32  # global
    micro_batch_size: PositiveInt | None = None  # per rank; default: the whole per-rank batch
    max_length: PositiveInt = 64
    seed: int = 0
    log_every: PositiveInt = 25


class TrainStageSpec(_Strict):
    steps: PositiveInt
    batch_size: PositiveInt = 32  # global: the same optimization on any number of workers
    micro_batch_size: PositiveInt | None = None  # per rank; default: the whole per-rank batch
    finetune: Literal["full"] | LoraFinetune = "full"
    max_length: PositiveInt = 64
    log_every: PositiveInt = 25
    warmup_frac: Annotated[float, Field(ge=0, lt=1)] = WARMUP_FRAC


class IntermediateSpec(TrainStageSpec):
    # A strategy name, or {name: {params}} (raysweep.spec.mixtures); a mixture may override it.
    sampler: Strategy = Strategy.model_validate("proportional")


class TargetSpec(TrainStageSpec):
    tasks: Annotated[list[str], Field(min_length=1)]
    eval_every: PositiveInt | None = None  # English dev evaluations (Tune reports) per task


class EvalSpec(_Strict):
    # "all" = every language a task declares; or a list applied to every task; or per task.
    languages: Literal["all"] | list[str] | dict[str, list[str]] = "all"
    batch_size: PositiveInt = 64
    max_examples: PositiveInt | None = None  # per (task, language, split), for quick runs


class StagesSpec(_Strict):
    pretrain: PretrainSpec | None = None
    intermediate: IntermediateSpec | None = None
    target: TargetSpec
    eval: EvalSpec = EvalSpec()


class MixtureSpec(_Strict):
    tasks: dict[str, PositiveFloat] = {}  # task -> weight; empty = no intermediate stage
    kind: Literal["none", "english", "multilingual"] | None = None  # derived when omitted
    sampler: Strategy | None = None  # overrides stages.intermediate.sampler for this mixture
    # Searched weights: `tasks` lists the candidates (weight 1.0 each), each trial draws its own.
    simplex: SimplexSpec | None = None


class ParamSpec(_Strict):
    values: Annotated[list[Any], Field(min_length=1)] | None = None
    loguniform: tuple[float, float] | None = None
    # With loguniform: sample only k log-spaced points (stage keys are then shared).
    grid: Annotated[int, Field(ge=2)] | None = None

    @model_validator(mode="after")
    def _one(self) -> "ParamSpec":
        if (self.values is None) == (self.loguniform is None):
            raise ValueError("give exactly one of 'values' (a list) or 'loguniform' ([low, high])")
        return self


class SchedulerSpec(_Strict):
    name: Literal["asha", "none"] = "none"
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0


class SearchSpec(_Strict):
    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: PositiveInt = 1  # optuna: trials per size; grid: repeats of the grid
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerSpec = SchedulerSpec()
    max_concurrent_trials: PositiveInt | None = None  # default: what the cluster fits
    seed: int = 0
    # Upstream stages must draw from finite sets (values, loguniform+grid, a simplex grid), so
    # trials share them; trials sharing one are held back until it is trained (run/upstream.py).
    share_stages: bool = False
    # Sizes run smallest first; each later size's lr ranges are narrowed around the power law
    # fitted to the finished sizes' best lrs, and Optuna starts from it (run/ladder.py).
    ladder: bool = False
    params: dict[str, ParamSpec]


class ResourcesSpec(_Strict):
    workers: PositiveInt = 2
    cpus_per_worker: CpuShare = 1
    gpus_per_worker: Annotated[int, Field(ge=0)] = 0
    cluster_cpus: PositiveInt | None = None  # default: this machine's cores (local Ray)
    cluster_gpus: Annotated[int, Field(ge=0)] | None = None
    gpu_memory_gb: PositiveFloat | None = None  # per worker; default 80 when workers use GPUs


class FaultsSpec(_Strict):
    """What a sweep does when a trial fails: Tune reruns a failed trial from its start up to
    `trial_retries` times (finished stages load from the store); Ray Train restarts a trial's
    worker group up to `worker_restarts` times (a dead worker, a lost node) before the trial
    fails. 0 and 0: a failure is final, recorded in the trials table, and the sweep goes on.
    A restarted worker group (or a retried in-process trial) resumes inside its stage from the
    latest checkpoint, taken every `checkpoint_every` training steps (0: none; then it reruns
    the stage). 100: a restart redoes at most 100 steps (seconds to minutes of a tiny model's
    stages, which run 200-300+ steps), and a checkpoint (weights plus AdamW's two moments, ~3x
    the weights, and one Tune report) every 100 steps is small beside them. In no stage key."""

    trial_retries: Annotated[int, Field(ge=0)] = 0
    worker_restarts: Annotated[int, Field(ge=0)] = 0
    checkpoint_every: Annotated[int, Field(ge=0)] = 100


class SweepSpec(_Strict):
    name: str
    description: str = ""
    world: dict[str, Any] = {}  # synthetic-world overrides (tiny models)
    data_dir: str | None = None  # local copies of real datasets, in their own schema
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    stages: StagesSpec
    mixtures: dict[str, MixtureSpec] = {NO_MIXTURE: MixtureSpec()}
    search: SearchSpec
    resources: ResourcesSpec = ResourcesSpec()
    faults: FaultsSpec = FaultsSpec()
    precision: Precision = "auto"
    activation_checkpointing: Checkpointing = "none"

    def workers(self, m: ModelSpec) -> int:
        return m.workers or self.resources.workers

    def cpus_per_worker(self, m: ModelSpec) -> int | float:
        return m.cpus_per_worker or self.resources.cpus_per_worker

    def gpus_per_worker(self, m: ModelSpec) -> int:
        return self.resources.gpus_per_worker if m.gpus_per_worker is None else m.gpus_per_worker

    def precision_of(self, m: ModelSpec) -> str:
        """"bf16" or "fp32": the model's override, else the space's, with "auto" resolved by
        whether its workers have GPUs."""
        p = m.precision or self.precision
        if p == "auto":
            return "bf16" if self.gpus_per_worker(m) > 0 else "fp32"
        return p

    def checkpointing_of(self, m: ModelSpec) -> str:
        return m.activation_checkpointing or self.activation_checkpointing

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def mixture_kind(self, name: str) -> str:
        mix = self.mixtures[name]
        if mix.kind:
            return mix.kind
        if not mix.tasks:
            return "none"
        from raysweep.tasks import get_task

        langs = {lang for t in mix.tasks for lang in get_task(t).train_languages}
        return "english" if langs <= {"en"} else "multilingual"

    @cached_property
    def normalized(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
