"""What `--dry-run` prints: per size, the trials, their stages and store keys, resources."""

from __future__ import annotations

import itertools
import json

from rich.console import Console
from rich.table import Table

from raysweep.plan.build import build_plan, eval_languages, n_params
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
        table = Table(title=f"{m.name}: {n_params(spec, m):,} params, {spec.workers(m)} workers "
                      f"x {spec.cpus_per_worker(m)} CPU" + (f" x 1 GPU = {gpus} GPUs per trial"
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
