"""What a space will cost, before launch and without data or weights: the stage DAG after
sharing, per stage tokens, FLOPs, device-hours and memory per rank, totals, the same totals if
nothing were shared, and the reuse factor. `raysweep plan` prints it; `launch --dry-run` prints
its totals; `check_fits` refuses a plan whose stages cannot fit their GPUs.

Which trials a space runs, per size (`trial_points`):
- grid: every grid point, `num_samples` times (repeats share their stored stages);
- optuna: `num_samples` trials. Optuna's draws are not known before launch, so the plan assumes
  the draws spread as widely as they can over the finite values: trial t takes the t-th point
  of the product of every finite parameter (`values`, or a `loguniform` with a `grid: k`
  resolution), cycling. That is the most distinct upstream stages `num_samples` trials can
  reach, so the reuse factor is a lower bound (TPE repeats good values more often). A
  continuous parameter (a `loguniform` with no grid) takes a new value in every trial, so a
  stored stage that depends on it is counted once per trial: nothing under it is shared. A
  searched mixture (`simplex`) gets a seeded uniform draw per trial, rounded to its grid as the
  search rounds it, so only draws that round alike share a stage.

Sharing: a stored stage (pretrain, intermediate) runs once per distinct key; a target or eval
stage runs in every trial. ASHA's early stops are not counted (full budgets: an upper bound).

Arithmetic: a training stage's tokens are steps x global batch x max_length (padded sequences,
as the step computes them); the target stage trains each fine-tuned target task for `steps`.
FLOPs are tokens x `LlamaArgs.flops_per_token` (6N + attention); a LoRA stage skips the frozen
weights' gradient matmuls, 4N instead of 6N. Eval is forward only (a third of the training
FLOPs per token) over its test sets, whose sizes are known only with data: counted when
`max_examples` caps them, else reported as unknown (None) and left out of the totals.
Device-hours are FLOPs / (`MFU` x the device's peak).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from raysweep.model.args import LlamaArgs
from raysweep.plan.build import TrialPlan, build_plan, n_params
from raysweep.plan.grid import SIMPLEX, finite_values, grid_points
from raysweep.plan.memory import (GPU_RESERVE_GB, MemoryEstimate, estimate_memory, fixes,
                                  gpu_budget_gb, model_args)
from raysweep.plan.stages import StageConfig, TrainingConfig
from raysweep.spec.space import SpaceError, SweepSpec

# The model FLOPs utilization the device-hours assume (torchtitan reports ~0.38-0.45 for
# LLaMA-scale bf16 training on H100s).
MFU = 0.40
# Peak dense FLOP/s per device: an H100 SXM's bf16 (fp32 runs on TF32 tensor cores at half);
# a CPU worker's, per core (AVX2 FMA, 2 x 8 fp32 lanes x 2 units at ~3 GHz).
GPU_PEAK_FLOPS = {"bf16": 989e12, "fp32": 494e12}
CPU_PEAK_FLOPS_PER_CORE = 96e9


@dataclass
class StageCost:
    """One node of the DAG after sharing: a stored stage (one run, however many trials use it),
    or a per-trial stage counted over the `trials` that run it under the same parent."""

    model: str
    kind: str
    key: str  # a stored stage's key; for per-trial stages the first trial's
    parent: str | None
    stored: bool
    trials: int  # trials that use this output (stored) or run this stage (per-trial)
    runs: int  # how many times it is computed
    tokens: int | None  # per run
    flops: float | None  # per run
    device_hours: float | None  # per run
    memory: MemoryEstimate | None
    config: StageConfig  # (the first trial's, for per-trial stages)
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "kind": self.kind, "key": self.key, "parent": self.parent,
                "stored": self.stored, "trials": self.trials, "runs": self.runs,
                "tokens": self.tokens, "flops": self.flops, "device_hours": self.device_hours,
                "total_flops": self.flops * self.runs if self.flops is not None else None,
                "memory_gb_per_rank": float(f"{self.memory.total:.4g}") if self.memory else None,
                "memory_breakdown": self.memory.breakdown() if self.memory else None,
                "hyperparameters": self.hyperparameters}


@dataclass
class SweepCost:
    space: str
    stages: list[StageCost]
    naive_runs: dict[tuple[str, str], int]  # (model, kind) -> runs if nothing were shared
    naive_flops: dict[tuple[str, str], float]
    trials: dict[str, int]  # model -> trials

    def flops(self, kind: str | None = None, naive: bool = False) -> float:
        if naive:
            return sum(v for (_, k), v in self.naive_flops.items() if kind in (None, k))
        return sum(s.flops * s.runs for s in self.stages
                   if s.flops is not None and kind in (None, s.kind))

    @property
    def reuse_factor(self) -> float | None:
        """Intermediate-stage compute if nothing were shared over what runs; the stored
        stages' together where a space has no intermediate stage; None with neither."""
        kinds = ["intermediate"] if self.flops("intermediate") else ["intermediate", "pretrain"]
        shared = sum(self.flops(k) for k in kinds)
        return sum(self.flops(k, naive=True) for k in kinds) / shared if shared else None

    def totals(self) -> dict[str, Any]:
        total, naive = self.flops(), self.flops(naive=True)
        per_kind = {k: {"flops": self.flops(k), "naive_flops": self.flops(k, naive=True)}
                    for k in dict.fromkeys(s.kind for s in self.stages)}
        hours = sum(s.device_hours * s.runs for s in self.stages if s.device_hours)
        return {"total_flops": total, "naive_total_flops": naive,
                "total_device_hours": hours,
                "naive_device_hours": hours * naive / total if total else 0.0,
                "reuse_factor": self.reuse_factor, "overall_reuse": naive / total if total else None,
                "mfu": MFU, "per_kind": per_kind,
                "uncounted": sorted({s.kind for s in self.stages if s.flops is None})}

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "trials": self.trials, **self.totals(),
                "stages": [s.to_dict() for s in self.stages]}


def trial_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The hyperparameters of the trials one size runs (see the module docstring)."""
    if spec.search.algorithm == "grid":
        return grid_points(spec) * spec.search.num_samples
    n = spec.search.num_samples
    finite = {k: v for k, p in spec.search.params.items()
              if (v := finite_values(p)) is not None}
    combos = list(itertools.product(*finite.values()))
    rng = random.Random(spec.search.seed)
    points = []
    for t in range(n):
        point = dict(zip(finite, combos[t % len(combos)]))
        for k, p in spec.search.params.items():
            if k not in finite:  # a new value per trial, spread over the range
                lo, hi = p.loguniform
                point[k] = lo * (hi / lo) ** ((t + 0.5) / n)
        simplex = {name: {task: rng.random() for task in mix.tasks}
                   for name, mix in spec.mixtures.items() if getattr(mix, "simplex", None)}
        if simplex:  # a draw per trial; rounding to the grid decides what is shared
            point[SIMPLEX] = simplex
        points.append(point)
    return points


def stage_tokens(stage: StageConfig, plan: TrialPlan) -> int | None:
    """Training tokens (steps x global batch x max_length, per fine-tuned task for the target
    stage); for eval, forward tokens where `max_examples` bounds them, else None."""
    from raysweep.tasks import get_task
    from raysweep.tasks.retrieval import fine_tuned

    if isinstance(stage, TrainingConfig):
        tasks = getattr(stage, "tasks", None)
        n = sum(fine_tuned(get_task(t)) for t in tasks) if tasks is not None else 1
        return n * stage.steps * stage.batch_size * stage.max_length
    if stage.max_examples is None:
        return None
    target = plan.stage("target")
    return sum(len(langs) for langs in stage.languages.values()) * stage.max_examples \
        * target.max_length


def stage_flops(args: LlamaArgs, stage: StageConfig, tokens: int | None,
                plan: TrialPlan) -> float | None:
    if tokens is None:
        return None
    if not isinstance(stage, TrainingConfig):  # forward only
        return tokens * args.flops_per_token(plan.stage("target").max_length) / 3
    per_token = args.flops_per_token(stage.max_length)
    return tokens * per_token * (4 / 6 if stage.lora else 1.0)


def device_hours(spec: SweepSpec, m, stage: StageConfig, flops: float | None) -> float | None:
    if flops is None:
        return None
    if spec.gpus_per_worker(m):
        peak = GPU_PEAK_FLOPS[getattr(stage, "precision", spec.precision_of(m))]
    else:
        peak = CPU_PEAK_FLOPS_PER_CORE * spec.cpus_per_worker(m)
    return flops / (MFU * peak) / 3600


def plan_cost(spec: SweepSpec) -> SweepCost:
    """The sweep's stage DAG after sharing, with each stage's cost, and the naive totals."""
    points = trial_points(spec)
    stages: dict[tuple[str, str], StageCost] = {}
    naive_runs: Counter = Counter()
    naive_flops: Counter = Counter()
    trials = {}
    for m in sorted(spec.models, key=lambda m: n_params(spec, m)):
        args, workers = model_args(spec, m), spec.workers(m)
        trials[m.name] = len(points)
        for point in points:
            plan = build_plan(spec, m, point)
            for s in plan.stages:
                node = (m.name, s.key if s.stored else f"{s.kind}@{s.parent}")
                if node not in stages:
                    tokens = stage_tokens(s, plan)
                    flops = stage_flops(args, s, tokens, plan) if args else None
                    like = plan.stage("target")
                    memory = estimate_memory(args, s, workers, gpu=spec.gpus_per_worker(m) > 0,
                                             like=like) if args else None
                    stages[node] = StageCost(
                        model=m.name, kind=s.kind, key=s.key, parent=s.parent, stored=s.stored,
                        trials=0, runs=0, tokens=tokens, flops=flops,
                        device_hours=device_hours(spec, m, s, flops), memory=memory, config=s,
                        hyperparameters=_upstream(plan, s))
                c = stages[node]
                c.trials += 1
                c.runs = 1 if s.stored else c.trials
                naive_runs[(m.name, s.kind)] += 1
                naive_flops[(m.name, s.kind)] += c.flops or 0.0
    return SweepCost(spec.name, list(stages.values()), dict(naive_runs), dict(naive_flops),
                     trials)


def _upstream(plan: TrialPlan, s: StageConfig) -> dict[str, Any]:
    """The searched values a stored stage depends on (for reading the DAG)."""
    if not s.stored:
        return {}
    names = {"pretrain": ("lr_pretrain",),
             "intermediate": ("mixture", "lr_intermediate", "seed", "lora_r")}[s.kind]
    return {k: plan.params[k] for k in names if k in plan.params}


def check_fits(spec: SweepSpec, file, cost: SweepCost | None = None) -> None:
    """Refuse (SpaceError) a plan with a stage whose per-rank memory estimate, plus
    `GPU_RESERVE_GB`, exceeds its workers' GPU memory; CPU-only models have no budget."""
    cost = cost or plan_cost(spec)
    for i, m in enumerate(spec.models):
        budget = gpu_budget_gb(spec, m)
        if budget is None:
            continue
        for c in cost.stages:
            if c.model != m.name or c.memory is None or c.memory.total + GPU_RESERVE_GB <= budget:
                continue
            remedy = fixes(model_args(spec, m), c.config, spec.workers(m), budget) \
                if isinstance(c.config, TrainingConfig) else []
            e = c.memory
            raise SpaceError(
                file, f"models.{i}", f"model {m.name!r}, stage {c.kind}: estimated "
                f"{e.total:.1f} GB per rank ({_parts(e)}) + {GPU_RESERVE_GB:.0f} GB reserve > "
                f"{budget:.0f} GB budget (resources.gpu_memory_gb) on {e.workers} workers, "
                f"{e.precision}, activation_checkpointing {e.checkpointing}, micro batch "
                f"{e.micro_batch} x {e.seq_len} tokens; would fit with any one of: "
                f"{'; '.join(remedy) or 'none of workers, activation_checkpointing, micro_batch_size, precision or LoRA alone'}")


def _parts(e: MemoryEstimate) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in e.breakdown().items() if k != "total")

