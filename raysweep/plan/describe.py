"""What `--dry-run` prints: per size, the trials, their stages and store keys, resources."""

from __future__ import annotations

import itertools
import json

from rich.console import Console
from rich.table import Table

from raysweep.plan.build import build_plan, eval_languages, n_params
from raysweep.plan.cost import SweepCost
from raysweep.plan.grid import grid_points, trials_per_size
from raysweep.spec import SweepSpec


def print_plan(spec: SweepSpec, console: Console) -> None:
    """What `--dry-run` shows: per size, the trials, their stages and store keys, resources.

    A grid shows every trial with its keys. Optuna draws its trials as results arrive, so
    there the rows are the space's categorical choices (mixture x seed), with the ranges."""
    from rich.markup import escape

    console.print(f"[bold]{spec.name}[/]: {len(spec.models)} model sizes x "
                  f"{trials_per_size(spec)} trials per size ({spec.search.algorithm}"
                  f"{', ASHA' if spec.search.scheduler.name == 'asha' else ''})")
    targets = spec.stages.target.tasks
    languages = sum(len(v) for v in eval_languages(spec).values())
    console.print(f"targets: {', '.join(targets)} ({languages} task-languages evaluated)")
    params = spec.search.params
    ranges = {k: p.loguniform for k, p in params.items() if p.loguniform is not None}
    if spec.search.algorithm == "grid":
        points = grid_points(spec) * spec.search.num_samples
    else:
        cats = {k: p.values for k, p in params.items() if p.values is not None}
        points = [dict(zip(cats, combo)) for combo in itertools.product(*cats.values())]
    for m in sorted(spec.models, key=lambda m: n_params(spec, m)):
        gpus = spec.workers(m) * spec.gpus_per_worker(m)
        table = Table(title=f"{m.name}: {n_params(spec, m):,} params, {spec.workers(m)} worker{'s' if spec.workers(m) != 1 else ''} "
                      f"x {spec.cpus_per_worker(m):g} CPU" + (f" x 1 GPU = {gpus} GPUs per trial"
                                                             if gpus else ""))
        for col in ("trial", "hyperparameters", "stages (store key)"):
            table.add_column(col)
        for i, point in enumerate(points):
            # Keys of stages under a searched lr are only known once Optuna draws it.
            sample = {**{k: (lo * hi) ** 0.5 for k, (lo, hi) in ranges.items()}, **point}
            plan = build_plan(spec, m, sample)
            stages = " -> ".join(_stage_label(s, ranges) for s in plan.stages)
            shown = {**point, **{k: f"loguniform{tuple(v)}" for k, v in ranges.items()}}
            table.add_row(str(i), escape(json.dumps(shown)), escape(stages))
        console.print(table)


def _stage_label(stage, searched: dict) -> str:
    if not stage.stored:
        return stage.kind
    if f"lr_{stage.kind}" in searched:  # its key depends on the lr Optuna draws
        return f"{stage.kind}(key per lr)"
    return f"{stage.kind}({stage.key[:8]})"


def _num(v, fmt: str = ".3g") -> str:
    return "?" if v is None else format(v, fmt)


def dag_table(cost: SweepCost, model: str) -> Table:
    """One size's stages after sharing: a stored stage once, with the trials that reuse it; the
    per-trial stages grouped under their parent."""
    stages = [s for s in cost.stages if s.model == model]
    table = Table(title=f"{model}: {cost.trials[model]} trials, {len(stages)} stage nodes "
                  "after sharing")
    for col in ("stage", "parent", "depends on", "trials", "runs", "tokens/run", "FLOPs/run",
                "device-h/run", "GB/rank"):
        table.add_column(col, justify="left" if col in ("stage", "parent", "depends on")
                         else "right")
    stored = [s for s in stages if s.stored]
    per_trial: dict[str, list] = {}
    for s in stages:
        if not s.stored:
            per_trial.setdefault(s.kind, []).append(s)
    for s in stored:
        table.add_row(f"{s.kind}({s.key[:8]})", (s.parent or "-")[:8],
                      json.dumps(s.hyperparameters), str(s.trials), str(s.runs),
                      _num(s.tokens), _num(s.flops), _num(s.device_hours),
                      _num(s.memory.total if s.memory else None, ".3g"))
    for kind, group in per_trial.items():  # every trial runs its own: one row per kind
        s = group[0]
        runs = sum(g.runs for g in group)
        mem = max((g.memory.total for g in group if g.memory), default=None)
        table.add_row(kind, f"{len(group)} parents", "per trial", str(runs), str(runs),
                      _num(s.tokens), _num(s.flops), _num(s.device_hours), _num(mem, ".3g"))
    return table


def print_totals(cost: SweepCost, console: Console) -> None:
    """The sweep's totals, shared and naive, and the reuse factor (also `launch --dry-run`)."""
    t = cost.totals()
    console.print(f"[bold]{cost.space}[/] totals (device-hours at MFU {t['mfu']:.0%}): "
                  f"{t['total_flops']:.3g} FLOPs, {t['total_device_hours']:,.1f} device-h; "
                  f"if nothing were shared {t['naive_total_flops']:.3g} FLOPs, "
                  f"{t['naive_device_hours']:,.1f} device-h")
    rf = t["reuse_factor"]
    console.print("reuse factor (intermediate-stage compute, naive / shared): "
                  f"{'-' if rf is None else f'{rf:.2f}x'}; whole sweep "
                  f"{_num(t['overall_reuse'], '.2f')}x"
                  + (f"; not counted (sizes known only with data): {', '.join(t['uncounted'])}"
                     if t["uncounted"] else ""))


def print_memory(cost: SweepCost, console: Console) -> None:
    """Per size and stage kind, the largest per-rank memory estimate with its breakdown (the
    total is the states plus the larger of gathered + activations and the step's temporaries)."""
    table = Table(title="memory per rank (GB, estimate; raysweep/plan/memory.py)")
    for col in ("model", "stage", "workers", "precision", "checkpointing", "micro x seq",
                "params", "grads", "optimizer", "gathered", "activations", "step temp",
                "total"):
        table.add_column(col)
    worst = {}  # (size, stage kind) -> its largest estimate, in the plan's order
    for s in cost.stages:
        if s.memory and ((s.model, s.kind) not in worst
                         or s.memory.total > worst[(s.model, s.kind)].total):
            worst[(s.model, s.kind)] = s.memory
    for (model, kind), e in worst.items():
        b = e.breakdown()
        table.add_row(model, kind, str(e.workers), e.precision, e.checkpointing + (
            " +LoRA" if e.lora else ""), f"{e.micro_batch} x {e.seq_len}",
            *(f"{b[k]:.3g}" for k in ("params", "grads", "optimizer", "gathered",
                                       "activations", "step_temp", "total")))
    console.print(table)
