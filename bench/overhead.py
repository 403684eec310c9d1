"""Per-trial fixed overhead and in-trial training throughput, measured side by side in one run.

    python bench/overhead.py [--trials 3] [--steps 60] [--rounds 3] [--no-readme]

Overhead (seconds per trial, Tuner.fit wall time / trials, trials one at a time):
  plain          a no-op Tune function trial (the floor)
  train_default  a no-op 2-worker Ray Train job inside a Tune trial, Ray's defaults
  raysweep       the same job as raysweep launches it (raysweep.run.trial.make_trainer, RAY_ENV)
Each variant runs in a fresh local Ray of its own (started here, in a temporary directory, never
an existing cluster), so environment settings apply to it alone. The Train controller's own log
lines break the start-up of the raysweep trials into phases.

Throughput (optimizer steps per second of the same tiny LLaMA, global batch, sequence length):
  bare_1     one process, 2 threads
  bare_fsdp  2 processes x 1 thread, FSDP2 over gloo, started with torch.multiprocessing
  in_trial   2 Ray Train workers x 1 thread inside a Tune trial (the raysweep path)
The loop (raysweep.train.loop.Trainer) is the same in all three.

Rounds: each of `--rounds` rounds measures every variant of both parts once, in an order
rotated by one from the previous round (round r starts with variant r; the two parts swap
places every other round), so that no variant always runs first, on a cold machine, or last.
Each figure is reported as the median over the rounds with its min-max spread; ratios are
ratios of medians. The last line printed is one JSON object with all the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE, BATCH, SEQ, VOCAB = "llama-tiny-s", 32, 48, 512
OVERHEAD_VARIANTS = ("plain", "train_default", "raysweep")
THROUGHPUT_VARIANTS = ("bare_1", "bare_fsdp", "in_trial")


def rotated(names: tuple[str, ...], round_index: int) -> list[str]:
    """The order of one round: the variants rotated by the round's index (a Latin square over
    as many rounds as there are variants)."""
    k = round_index % len(names)
    return list(names[k:] + names[:k])


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextlib.contextmanager
def local_ray(ray_dir: str, env: dict[str, str] | None):
    """A fresh 2-CPU local Ray whose session files live under `ray_dir`: address="local" never
    joins a cluster someone else started on this machine, and the session is shut down on any
    exit, exceptions and Ctrl-C included."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False,
             _temp_dir=ray_dir, runtime_env={"env_vars": env} if env else None)
    try:
        yield
    finally:
        ray.shutdown()


# --- overhead -------------------------------------------------------------------------------------


def plain_trial(config):
    from ray import tune

    tune.report({"objective": 1.0})


def noop_worker(config):
    import ray.train

    ray.train.report({"objective": 1.0})


def train_trial(config):
    from ray import tune

    from raysweep.run.trial import make_trainer

    trainer = make_trainer(noop_worker, {}, name=f"bench-{tune.get_context().get_trial_id()}",
                           storage=config["storage"], workers=2, cpus_per_worker=1,
                           gpus_per_worker=0)
    trainer.fit()
    tune.report({"objective": 1.0})


def time_trials(fn, n: int, storage: str, env: dict[str, str] | None, ray_dir: str) -> float:
    """Seconds per trial: Tuner.fit wall time over `n` no-op trials run one at a time."""
    from ray import tune

    with local_ray(ray_dir, env):
        tuner = tune.Tuner(
            tune.with_resources(fn, {"cpu": 0, "memory": 64 * 2**20}),
            param_space={"storage": storage, "i": tune.grid_search(list(range(n)))},
            tune_config=tune.TuneConfig(metric="objective", mode="max", max_concurrent_trials=1),
            run_config=tune.RunConfig(storage_path=storage, verbose=0),
        )
        start = time.perf_counter()
        grid = tuner.fit()
        wall = time.perf_counter() - start
        assert not grid.errors, grid.errors
        return wall / n


PHASES = {
    "worker actors created": r"(\d+) worker actors created in ([\d.]+)s",
    "train context initialized (incl. process group)": r"Train context initialized on workers in ([\d.]+)s",
    "worker group start, total": r"Worker group startup completed in ([\d.]+)s total",
}


def startup_phases(ray_dir: str) -> dict[str, list[float]]:
    """Seconds per phase of each Train run in the latest Ray session under `ray_dir` (read right
    after that session, before the next one replaces `session_latest`)."""
    logs = glob.glob(f"{ray_dir}/session_latest/logs/train/ray-train-sys-controller-*.log")
    found: dict[str, list[float]] = {k: [] for k in PHASES}
    for f in logs:
        text = Path(f).read_text(errors="replace")
        for name, pattern in PHASES.items():
            for m in re.finditer(pattern, text):
                found[name].append(float(m.groups()[-1]))
    return found


# --- throughput -----------------------------------------------------------------------------------


def _setup(threads: int):
    import torch

    from raysweep.model.args import tiny_args
    from raysweep.model.checkpoint import init_backbone
    from raysweep.model.parallelize import device_mesh, parallelize
    from raysweep.model.task_model import TaskModel
    from raysweep.tasks.base import Task
    from raysweep.tasks.encoding import SequenceClassificationEncoder
    from raysweep.train.loop import Optim, Trainer
    from raysweep.train.ranks import Ranks
    from raysweep.train.stream import FeatureStream

    torch.set_num_threads(threads)
    task = Task(name="bench", category="classification", head="seq_cls", metric="accuracy",
                languages=("en",), roles=frozenset({"target"}), source="bench",
                loader=lambda *a: None, num_labels=3)
    model = TaskModel(init_backbone(tiny_args(SIZE, VOCAB), seed=0))
    model.add_head(task)
    model = parallelize(model, device_mesh())
    g = torch.Generator().manual_seed(0)
    features = [{"input_ids": torch.randint(3, VOCAB, (SEQ,), generator=g).tolist(),
                 "label": i % 3, "example_index": i} for i in range(512)]
    stream = FeatureStream(features, BATCH, seed=0, ranks=Ranks.current())
    trainer = Trainer(model, {"bench": SequenceClassificationEncoder},
                      Optim(lr=1e-3, steps=10**6, warmup_frac=0.1),
                      pad_id=0, seed=0)
    return trainer, {"bench": stream}


def steps_per_second(threads: int, steps: int) -> float:
    trainer, streams = _setup(threads)
    trainer.run(streams, 5, log_every=5)  # warm-up: allocator, first all-gathers
    start = time.perf_counter()
    trainer.run(streams, steps, log_every=steps)
    return steps / (time.perf_counter() - start)


def _fsdp_proc(rank: int, port: int, steps: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    sps = steps_per_second(1, steps)
    if rank == 0:
        Path(out).write_text(str(sps))
    dist.destroy_process_group()


def bare_fsdp(steps: int, work: str) -> float:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mktemp(dir=work)
    mp.start_processes(_fsdp_proc, args=(port, steps, out), nprocs=2, start_method="spawn")
    return float(Path(out).read_text())


def throughput_worker(config):
    import ray.train

    sps = steps_per_second(1, config["steps"])
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["out"]).write_text(str(sps))
    ray.train.report({"objective": sps})


def throughput_trial(config):
    from ray import tune

    from raysweep.run.trial import make_trainer

    make_trainer(throughput_worker, {"steps": config["steps"], "out": config["out"]},
                 name=f"bench-tp-{tune.get_context().get_trial_id()}", storage=config["storage"],
                 workers=2, cpus_per_worker=1, gpus_per_worker=0).fit()
    tune.report({"objective": 1.0})


def in_trial(steps: int, storage: str, ray_dir: str, work: str) -> float:
    from ray import tune

    from raysweep.run.sweep import RAY_ENV

    out = tempfile.mktemp(dir=work)
    with local_ray(ray_dir, RAY_ENV):
        tune.Tuner(tune.with_resources(throughput_trial, {"cpu": 0, "memory": 64 * 2**20}),
                   param_space={"steps": steps, "out": out, "storage": storage},
                   run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
    return float(Path(out).read_text())


# --- rounds ---------------------------------------------------------------------------------------


def measure(trials: int, steps: int, rounds: int, work: str) -> dict:
    """Every variant once per round, in rotated order; the raw per-round figures."""
    from raysweep.run.sweep import RAY_ENV

    storage, ray_dir = f"{work}/storage", f"{work}/ray"
    overhead = {"plain": (plain_trial, None), "train_default": (train_trial, None),
                "raysweep": (train_trial, RAY_ENV)}
    throughput = {"bare_1": lambda: steps_per_second(2, steps),
                  "bare_fsdp": lambda: bare_fsdp(steps, work),
                  "in_trial": lambda: in_trial(steps, storage, ray_dir, work)}
    per_trial = {v: [] for v in OVERHEAD_VARIANTS}
    sps = {v: [] for v in THROUGHPUT_VARIANTS}
    phases: dict[str, list[float]] = {k: [] for k in PHASES}
    orders = []
    for r in range(rounds):
        parts = [rotated(OVERHEAD_VARIANTS, r), rotated(THROUGHPUT_VARIANTS, r)]
        order = parts[0] + parts[1] if r % 2 == 0 else parts[1] + parts[0]
        orders.append(order)
        for v in order:
            if v in overhead:
                fn, env = overhead[v]
                per_trial[v].append(time_trials(fn, trials, storage, env, ray_dir))
                if v == "raysweep":
                    for k, vals in startup_phases(ray_dir).items():
                        phases[k] += vals
                figure = f"{per_trial[v][-1]:.2f} s/trial"
            else:
                sps[v].append(throughput[v]())
                figure = f"{sps[v][-1]:.2f} steps/s"
            print(f"round {r + 1}/{rounds}: {v} {figure}", file=sys.stderr, flush=True)
    return {"per_trial": per_trial, "sps": sps, "phases": phases, "orders": orders}


def summarize(raw: dict, args) -> dict:
    per_trial = {v: spread(x) for v, x in raw["per_trial"].items()}
    sps = {v: spread(x) for v, x in raw["sps"].items()}
    med = {v: s["median"] for v, s in {**per_trial, **sps}.items()}
    return {
        "per_trial_s": per_trial,
        "ratio_vs_plain": {v: med[v] / med["plain"] for v in OVERHEAD_VARIANTS},
        "steps_per_s": sps,
        "in_trial_over_bare_fsdp": med["in_trial"] / med["bare_fsdp"],
        "in_trial_over_bare_1": med["in_trial"] / med["bare_1"],
        "startup_phases_s": {k: statistics.mean(v) for k, v in raw["phases"].items() if v},
        "rounds": args.rounds, "trials": args.trials, "steps": args.steps,
        "orders": raw["orders"],
    }


def section(fig: dict, args) -> str:
    """The README's perf section: medians over the rounds with their min-max spread."""
    from raysweep.model.args import tiny_args

    n = tiny_args(SIZE, VOCAB).n_params()

    def cell(s: dict, fmt: str) -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}-{s['max']:{fmt}})"

    pt, ratio, sps = fig["per_trial_s"], fig["ratio_vs_plain"], fig["steps_per_s"]
    rounds = f"{args.rounds} round{'s' if args.rounds > 1 else ''}"
    head = (f"Measured by `python bench/overhead.py --trials {args.trials} --steps {args.steps} "
            f"--rounds {args.rounds}` on {os.cpu_count()} CPU cores "
            f"({time.strftime('%Y-%m-%d')}): each figure is the median over {rounds} (min-max in "
            "brackets), the variants' order rotated from round to round; ratios are ratios of "
            "medians.")
    overhead = [
        ("plain Tune function trial", pt["plain"], 1.0),
        ("2-worker Train job in a Tune trial, Ray defaults", pt["train_default"],
         ratio["train_default"]),
        ("the same, as raysweep launches it", pt["raysweep"], ratio["raysweep"]),
    ]
    throughput = [
        ("bare PyTorch, 1 process x 2 threads", sps["bare_1"],
         f"{fig['in_trial_over_bare_1']:.2f} (trial / this)"),
        ("bare PyTorch FSDP2, 2 processes x 1 thread (gloo)", sps["bare_fsdp"],
         f"{fig['in_trial_over_bare_fsdp']:.2f} (trial / this)"),
        ("inside a raysweep trial, 2 Train workers x 1 thread", sps["in_trial"], "1.00"),
    ]
    return "\n".join([
        head,
        "",
        "| per-trial fixed cost (no-op trial, one at a time) | s / trial | vs plain |",
        "|---|---|---|",
        *[f"| {label} | {cell(s, '.1f')} | {r:.2f} |" for label, s, r in overhead],
        "",
        "Where a Train job's start-up goes (Train controller log, mean over the raysweep runs):",
        "",
        *[f"- {k}: {v:.1f} s" for k, v in fig["startup_phases_s"].items()],
        "",
        (f"| training throughput, {SIZE} ({n:,} params), batch {BATCH} x {SEQ} tokens "
         "| steps/s | ratio |"),
        "|---|---|---|",
        *[f"| {label} | {cell(s, '.2f')} | {r} |" for label, s, r in throughput],
    ])


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    content = readme.read_text()
    start, end = "<!-- perf:start -->", "<!-- perf:end -->"
    head, rest = content.split(start)
    _, tail = rest.split(end)
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    if min(args.trials, args.steps, args.rounds) < 1:
        ap.error("--trials, --steps and --rounds must be at least 1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # short path: Ray's socket paths under it must stay below the OS limit (107 bytes)
    work = tempfile.mkdtemp(prefix="rsb-", dir="/tmp")
    try:
        figures = summarize(measure(args.trials, args.steps, args.rounds, work), args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = section(figures, args)
    if not args.no_readme:
        write_readme(text)
    print(text)
    print(json.dumps(figures))  # the last line: every figure, machine-readable


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
