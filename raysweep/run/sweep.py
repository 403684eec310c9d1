"""Driving Ray Tune: one `Tuner` per model size, smallest first.

Model size is the outer (scaling) axis rather than a Tune dimension because `OptunaSearch`
refuses `grid_search` axes, and because a size's results can then inform the next size's search.
Within a size, the space's search runs: a grid, or Optuna TPE, optionally under ASHA.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from raysweep.console import make_console
from raysweep.plan.build import n_params
from raysweep.plan.grid import SIMPLEX, finite_values, trials_per_size
from raysweep.results.best import SPACE_FILE
from raysweep.results.tables import Location, is_uri, location, put_bytes, read_text
from raysweep.run.store import stage_root
from raysweep.spec import SpaceError, SweepSpec, check_resources
from raysweep.spec.space import ModelSpec, ParamSpec


def param_space(spec: SweepSpec, params: dict[str, ParamSpec] | None = None) -> dict[str, Any]:
    """What Tune searches: `params` (default: the space's; the ladder narrows them) and one
    uniform draw per task of each searched mixture (`raysweep.plan.grid`). A `loguniform` with
    `grid: k` is its k points, a categorical (the values are the lrs themselves)."""
    from ray import tune

    space: dict[str, Any] = {}
    for key, p in (params or spec.search.params).items():
        values = finite_values(p)
        if spec.search.algorithm == "grid":
            space[key] = tune.grid_search(values)
        elif values is None:
            space[key] = tune.loguniform(*p.loguniform)
        else:
            space[key] = tune.choice(values)
    simplex = {name: {t: tune.uniform(0.0, 1.0) for t in mix.tasks}
               for name, mix in spec.mixtures.items() if mix.simplex is not None}
    if simplex:
        space[SIMPLEX] = simplex
    return space


def max_concurrent(spec: SweepSpec, m: ModelSpec, cluster_cpus: int) -> int:
    """Trials of size `m` at once: the space's limit, else as many as the cluster's CPUs hold
    (per size: a size with 1-worker trials runs twice as many at once as one with 2)."""
    if spec.search.max_concurrent_trials:
        return spec.search.max_concurrent_trials
    return max(1, int(cluster_cpus // (spec.workers(m) * spec.cpus_per_worker(m))))


def trial_resources(spec: SweepSpec, m: ModelSpec) -> dict[str, float]:
    """What one trial of size `m` holds. A 1-worker trial runs its stages in its own process
    (`raysweep.run.trial.in_process`), so it holds the worker's CPUs and GPUs. A trial with a Train
    job only waits on its workers, which hold them; Tune refuses an empty bundle, so it asks for a
    token of memory instead of a CPU."""
    if spec.workers(m) == 1:
        return {"cpu": spec.cpus_per_worker(m), "gpu": spec.gpus_per_worker(m)}
    return {"cpu": 0, "memory": 64 * 2**20}


def trial_retries(spec: SweepSpec, m: ModelSpec) -> int:
    """Tune's reruns of a failed trial. An in-process trial has no Train worker group to
    restart, so its worker restarts are reruns too."""
    extra = spec.faults.worker_restarts if spec.workers(m) == 1 else 0
    return spec.faults.trial_retries + extra


@dataclass
class Launch:
    sweep_dir: Path | str  # a local path, or the URI of a sweep on remote storage
    errors: int


@dataclass(frozen=True)
class Storage:
    """Where a sweep writes, as every node names it: `root` (a local path, made absolute, or a
    URI) holds `<sweep>/` (the result tables), `tune/` and `train/` (Ray's run state); `stages`
    the stage store, which must be a shared POSIX directory (`raysweep.run.store.stage_root`)."""

    root: Location
    stages: Path

    @classmethod
    def of(cls, storage: str | os.PathLike, stages: str | os.PathLike | None = None) -> "Storage":
        root = str(storage) if is_uri(storage) else str(Path(storage).resolve())
        return cls(location(root), stage_root(root, stages).resolve())


# Environment of every Ray worker of a sweep (the job's runtime_env). The Train controller polls
# its workers every 2 s by default, and a trial waits on several polls (start, each report,
# the end). Each poll is also an RPC into the training process, which costs CPU throughput:
# 0.5 s cost a third of a tiny model's steps/s here, 1.0 s is the measured compromise (README,
# performance). The preemption watcher is for spot clusters.
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "1.0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "TOKENIZERS_PARALLELISM": "false",
}


# Where the sweep's stage store is, for `raysweep resume` (its --stages may be anywhere).
LAUNCH_FILE = "launch.json"


def guard_sweep_dir(spec: SweepSpec, file: Path, sweep_dir: Location) -> None:
    """A sweep directory holds one space's results: relaunching the same space resumes it, and
    another space must not mix its rows into it (or overwrite its space.json)."""
    recorded = read_text(sweep_dir / SPACE_FILE)
    if recorded is not None and not same_space(recorded, spec):
        raise SpaceError(file, "name", f"the sweep directory {sweep_dir} holds a sweep of another "
                         "space (its space.json differs); allowed: the same space, to resume it, "
                         "or another --name / --storage")


def same_space(recorded: str, spec: SweepSpec) -> bool:
    """Whether a sweep's space.json is `spec`. It is read back through `SweepSpec`, so a sweep
    written before a setting existed compares with that setting's default filled in (a
    relaunch after an upgrade resumes it, instead of calling it another space)."""
    try:
        return SweepSpec.model_validate(json.loads(recorded)).normalized == spec.normalized
    except ValueError:  # not JSON, or not a space any more (pydantic's error is a ValueError)
        return False


def use_cluster_token() -> bool:
    """Ray 2.60 starts a `ray start` cluster with token authentication whenever a token exists
    (`RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or ~/.ray/auth_token), but a driver that connects
    sends its token only under `RAY_AUTH_MODE=token`: without it the launch dies with
    InvalidAuthToken. So a driver that has a token and no stated mode uses the token."""
    if "RAY_AUTH_MODE" in os.environ:  # the user's choice stands
        return os.environ["RAY_AUTH_MODE"].lower() == "token"
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).exists():
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:
            # `import ray` has already read RAY_AUTH_MODE into its config, which stays 'disabled'
            # (the launch still dies with InvalidAuthToken); re-read it, as Ray's own
            # `ray start` does after turning token mode on (authentication_token_setup).
            from ray._raylet import Config

            Config.initialize("")
        return True
    return False


def connect(address: str | None, cpus: int | None, verbose: bool) -> None:
    import ray

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": RAY_ENV}
    if address:
        use_cluster_token()
        ray.init(address=address, log_to_driver=verbose, runtime_env=runtime_env)
    else:  # the embedded default: a local Ray on this machine, with its dashboard (see README)
        ray.init(num_cpus=cpus or os.cpu_count(), include_dashboard=True,
                 dashboard_host="127.0.0.1", log_to_driver=verbose, runtime_env=runtime_env)


def launch(spec: SweepSpec, file: Path, storage: str | os.PathLike, name: str | None = None,
           address: str | None = None, verbose: bool = False,
           console: Console | None = None, stages: str | os.PathLike | None = None,
           trackers: tuple[str, ...] = ()) -> Launch:
    """`storage`: a local directory or a URI (s3://, gs://, file://) for the result tables and
    Ray's state; `stages`: the stage store's shared POSIX directory (default
    `<storage>/stages`, which a non-file URI storage cannot hold: StageRootError)."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from raysweep.run.ladder import Ladder
    from raysweep.run.progress import Progress
    from raysweep.run.record import RecordTrials
    from raysweep.run.trackers import tracker_callbacks
    from raysweep.run.trial import run_trial
    from raysweep.run.upstream import make_searcher

    console = console or make_console()
    where = Storage.of(storage, stages)
    name = name or spec.name
    sweep_dir = where.root / name
    guard_sweep_dir(spec, file, sweep_dir)
    if read_text(sweep_dir / SPACE_FILE) is not None:  # the same space (guarded): go on with it
        console.print(f"resuming the sweep in {sweep_dir}: finished trials are kept, the rest "
                      "run (raysweep resume does the same)")
    if sweep_dir.local:
        Path(sweep_dir.path).mkdir(parents=True, exist_ok=True)
    connect(address, spec.resources.cluster_cpus, verbose)
    cluster = ray.cluster_resources()
    cpus, gpus = int(cluster.get("CPU", 0)), int(cluster.get("GPU", 0))
    check_resources(spec, file, cpus, gpus)  # the cluster we really have (names: checked at load)
    put_bytes(sweep_dir / SPACE_FILE, json.dumps(spec.normalized, indent=1).encode())
    put_bytes(sweep_dir / LAUNCH_FILE, json.dumps({"stages": str(where.stages)}).encode())
    errors = 0
    ladder = Ladder(spec, sweep_dir, console)
    for m in sorted(spec.models, key=lambda m: n_params(spec, m)):
        console.print(f"[bold]{m.name}[/] ({n_params(spec, m):,} params): "
                      f"{trials_per_size(spec)} trials")
        s = spec.search
        params, first_points = ladder.before(m)  # the space's, unless the ladder narrows them
        at_once = max_concurrent(spec, m, cpus)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, plan_base={"spec": spec.normalized, "model": m.name},
                                 storage=str(where.root), sweep_dir=str(sweep_dir),
                                 stages=str(where.stages)),
            trial_resources(spec, m),
        )
        tune_config = tune.TuneConfig(
            metric="objective", mode=s.mode, num_samples=s.num_samples,
            max_concurrent_trials=at_once,
            # A trial's process keeps its imports (torch, transformers, Ray Train: ~8 s of CPU
            # each time here) for the size's next trial. Every trial seeds its own generators,
            # so no number depends on which process ran it before.
            reuse_actors=True,
            search_alg=make_searcher(spec, m, where.stages, first_points, hold=at_once),
            scheduler=ASHAScheduler(time_attr="training_iteration",
                                    grace_period=s.scheduler.grace_period,
                                    reduction_factor=s.scheduler.reduction_factor)
            if s.scheduler.name == "asha" else None,
        )
        run_config = tune.RunConfig(
            name=f"{name}-{m.name}", storage_path=str(where.root / "tune"), verbose=0,
            callbacks=[Progress(m.name, trials_per_size(spec), s.mode),
                       RecordTrials(spec, m.name, str(sweep_dir)),
                       *tracker_callbacks(trackers, spec, m.name, sweep_dir)],
            failure_config=tune.FailureConfig(max_failures=trial_retries(spec, m)),
        )
        experiment = str(where.root / "tune" / f"{name}-{m.name}")
        if tune.Tuner.can_restore(experiment):  # a relaunch: finish what is left, redo errors
            console.print(f"resuming {experiment}")
            tuner = tune.Tuner.restore(experiment, trainable, resume_errored=True,
                                       param_space=param_space(spec, params))
        else:
            tuner = tune.Tuner(trainable, param_space=param_space(spec, params),
                               tune_config=tune_config,
                               run_config=run_config)
        errors += sum(1 for r in tuner.fit() if r.error)
        ladder.after(m)  # what the size found, beside what was predicted
    return Launch(Path(sweep_dir.path) if sweep_dir.local else str(sweep_dir), errors)
