"""Per-trial fixed overhead and in-trial training throughput, measured side by side in one run.

    python bench/overhead.py [--trials 3] [--steps 60] [--no-readme]

Overhead (seconds per trial, Tuner.fit wall time / trials, trials one at a time):
  plain     a no-op Tune function trial (the floor)
  raw       a no-op 2-worker Ray Train job inside a Tune trial, Ray's defaults
  raysweep  the same job as raysweep launches it (raysweep.run.trial.make_trainer, RAY_ENV)
Each variant runs in a fresh local Ray, so environment settings apply to it alone. The Train
controller's own log lines break the start-up of the last raysweep trial into phases.

Throughput (optimizer steps per second of the same tiny LLaMA, global batch, sequence length):
  bare-1    one process, 2 threads
  bare-fsdp 2 processes x 1 thread, FSDP2 over gloo, started with torch.multiprocessing
  trial     2 Ray Train workers x 1 thread inside a Tune trial (the raysweep path)
The loop (raysweep.train.loop.Trainer) is the same in all three.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZE, BATCH, SEQ, VOCAB = "llama-tiny-s", 32, 48, 512


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


def time_trials(fn, n: int, storage: str, env: dict[str, str] | None) -> float:
    import ray
    from ray import tune

    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False,
             runtime_env={"env_vars": env} if env else None)
    try:
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
    finally:
        ray.shutdown()


PHASES = {
    "worker actors created": r"(\d+) worker actors created in ([\d.]+)s",
    "train context initialized (incl. process group)": r"Train context initialized on workers in ([\d.]+)s",
    "worker group start, total": r"Worker group startup completed in ([\d.]+)s total",
}


def startup_phases() -> dict[str, float]:
    """Mean seconds per phase over the Train runs of the latest Ray session's controller logs."""
    logs = glob.glob("/tmp/ray/session_latest/logs/train/ray-train-sys-controller-*.log")
    found: dict[str, list[float]] = {k: [] for k in PHASES}
    for f in logs:
        text = Path(f).read_text(errors="replace")
        for name, pattern in PHASES.items():
            for m in re.finditer(pattern, text):
                found[name].append(float(m.groups()[-1]))
    return {k: statistics.mean(v) for k, v in found.items() if v}


# --- throughput -----------------------------------------------------------------------------------


def _setup(threads: int):
    import torch

    from raysweep.model.task_model import TaskModel, init_backbone, tiny_config
    from raysweep.model.parallelize import device_mesh, parallelize
    from raysweep.tasks.base import Task
    from raysweep.tasks.heads import SequenceClassificationHead
    from raysweep.train.loop import FeatureStream, Optim, Ranks, Trainer

    torch.set_num_threads(threads)
    task = Task(name="bench", category="classification", head="seq_cls", metric="accuracy",
                languages=("en",), roles=frozenset({"target"}), source="bench",
                loader=lambda *a: None, num_labels=3)
    model = TaskModel(init_backbone(tiny_config(SIZE, VOCAB), seed=0))
    model.add_head(task)
    model = parallelize(model, device_mesh())
    g = torch.Generator().manual_seed(0)
    features = [{"input_ids": torch.randint(3, VOCAB, (SEQ,), generator=g).tolist(),
                 "label": i % 3, "example_index": i} for i in range(512)]
    stream = FeatureStream(features, BATCH, seed=0, ranks=Ranks.current())
    trainer = Trainer(model, {"bench": SequenceClassificationHead}, Optim(lr=1e-3, steps=10**6),
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


def bare_fsdp(steps: int) -> float:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mktemp()
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


def in_trial(steps: int, storage: str) -> float:
    import ray
    from ray import tune

    from raysweep.run.sweep import RAY_ENV

    out = tempfile.mktemp()
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False,
             runtime_env={"env_vars": RAY_ENV})
    try:
        tune.Tuner(tune.with_resources(throughput_trial, {"cpu": 0, "memory": 64 * 2**20}),
                   param_space={"steps": steps, "out": out, "storage": storage},
                   run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
    finally:
        ray.shutdown()
    return float(Path(out).read_text())


def write_readme(section: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- perf:start -->", "<!-- perf:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    readme.write_text(f"{head}{start}\n{section}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from raysweep.run.sweep import RAY_ENV

    storage = tempfile.mkdtemp(prefix="raysweep-bench-")
    plain = time_trials(plain_trial, args.trials, storage, None)
    raw = time_trials(train_trial, args.trials, storage, None)
    ours = time_trials(train_trial, args.trials, storage, RAY_ENV)
    phases = startup_phases()
    single = steps_per_second(2, args.steps)
    fsdp = bare_fsdp(args.steps)
    trial = in_trial(args.steps, storage)

    from raysweep.model.task_model import count_params, tiny_config

    n = count_params(tiny_config(SIZE, VOCAB))
    lines = [
        f"Measured by `python bench/overhead.py --trials {args.trials} --steps {args.steps}` "
        f"on {os.cpu_count()} CPU cores ({time.strftime('%Y-%m-%d')}).",
        "",
        "| per-trial fixed cost (no-op trial, one at a time) | s / trial | vs plain |",
        "|---|---|---|",
        f"| plain Tune function trial | {plain:.1f} | 1.00 |",
        f"| 2-worker Train job in a Tune trial, Ray defaults | {raw:.1f} | {raw / plain:.2f} |",
        f"| the same, as raysweep launches it | {ours:.1f} | {ours / plain:.2f} |",
        "",
        "Where a Train job's start-up goes (Train controller log, mean over the raysweep runs):",
        "",
        *[f"- {k}: {v:.1f} s" for k, v in phases.items()],
        "",
        f"| training throughput, {SIZE} ({n:,} params), batch {BATCH} x {SEQ} tokens | steps/s | ratio |",
        "|---|---|---|",
        f"| bare PyTorch, 1 process x 2 threads | {single:.2f} | {trial / single:.2f} (trial / this) |",
        f"| bare PyTorch FSDP2, 2 processes x 1 thread (gloo) | {fsdp:.2f} | {trial / fsdp:.2f} (trial / this) |",
        f"| inside a raysweep trial, 2 Train workers x 1 thread | {trial:.2f} | 1.00 |",
    ]
    section = "\n".join(lines)
    print(section)
    print(json.dumps({"plain_s": plain, "raw_s": raw, "raysweep_s": ours, "phases": phases,
                      "single_sps": single, "fsdp_sps": fsdp, "trial_sps": trial}))
    if not args.no_readme:
        write_readme(section)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
