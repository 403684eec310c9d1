"""Fault injection on a small sweep, against an uninterrupted run of the same sweep (issue 11).

Each round runs the whole sweep afresh (its own storage, so nothing is reused from another
round) with one fault, the kinds in turn:

- raise:  a stage raises once (`raysweep.run.failures.inject`); Tune retries the trial;
- lease:  a stage's LEASE file is deleted while its holder computes; the holder finds out
          (`LeaseLost`), its trial fails and is retried;
- worker: the process that runs a trial's stages is SIGKILLed mid-trial (a 1-worker trial runs
          them in the Tune trial's own process; else a Ray Train worker); Tune retries the
          trial, or Train restarts the worker group;
- driver: the sweep's driver is SIGKILLed after its first trial's row, then
          `raysweep resume` finishes it;
- midstage: a 2-worker trial's rank 1 SIGKILLs itself at pretraining step 13 (an inject file,
          `raysweep.run.failures.kill_injected`); Train restarts the worker group, which
          resumes from the step-10 checkpoint (`raysweep.run.resume`).

The sweep: tiny-xs, 2 trials of 1 worker each (both run at once and share their pretraining),
`faults: {trial_retries: 2, worker_restarts: 1}`; for `midstage`, one trial of 2 workers
checkpointing every 5 steps. One local Ray serves every driver (each a `raysweep launch
--address` subprocess, so the driver can be killed). A round survived when its sweep ends with
every trial done. Rows are matched to the uninterrupted run's (of the same space) by trial
config (`keyed`): lost = missing, duplicated = a key held twice, and the largest difference of
a value (wall-clock columns and spend rows are not compared).

    python bench/faults.py --rounds 10

Last line: {"injected", "survived", "rows_lost", "rows_duplicated", "max_metric_diff"}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysweep.results.tables import load  # noqa: E402
from raysweep.run.failures import INJECT_DIR  # noqa: E402
from raysweep.run.store import LEASE  # noqa: E402
from raysweep.spec import SPACES_DIR  # noqa: E402

KINDS = ("raise", "lease", "worker", "driver", "midstage")
NAME = "faults"
KILL_AT = 13  # midstage: rank 1 dies at this pretraining step (checkpoints every 5)


def write_space(where: Path, steps: int, two_workers: bool = False) -> Path:
    raw = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    raw["name"] = NAME
    raw["models"] = [{"name": "tiny-xs", "tiny": "llama-tiny-xs", "pretrain_steps": 2 * steps}]
    raw["stages"]["intermediate"].update(steps=steps, log_every=5)
    raw["stages"]["target"].update(steps=steps, eval_every=5, log_every=5)
    raw["stages"]["eval"]["max_examples"] = 48
    raw["search"]["params"] = {"lr_target": {"values": [1e-3, 3e-3]},
                               "lr_intermediate": {"values": [2e-3]},
                               "mixture": {"values": ["english"]}}
    raw["resources"] = {"workers": 1, "cpus_per_worker": 1}
    raw["faults"] = {"trial_retries": 2, "worker_restarts": 1}
    if two_workers:  # one trial (the local Ray has 2 CPUs), no intermediate stage
        raw["search"]["params"].update(lr_target={"values": [3e-3]},
                                       mixture={"values": ["none"]})
        raw["stages"]["pretrain"]["log_every"] = 2
        raw["resources"]["workers"] = 2
        raw["faults"]["checkpoint_every"] = 5
    path = where / ("faults-2w.yaml" if two_workers else "faults.yaml")
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(*args: str, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "raysweep.cli.app", *args], cwd=ROOT,
                                stdout=f, stderr=subprocess.STDOUT)


def wait_for(cond: Callable[[], object], proc: subprocess.Popen, timeout: float = 900):
    """`cond()`'s first truthy value, or None if the sweep ended (or timed out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        got = cond()
        if got:
            return got
        time.sleep(0.2)
    return None


def trial_processes() -> list:
    """The processes that run this bench's trials' stages: Ray Train workers, or Tune trial
    actors (a 1-worker trial runs in-process); descendants of this process (its local Ray)."""
    import psutil

    me = os.getpid()
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(p.info["cmdline"] or [])
            if ("RayTrainWorker" in line or "ImplicitFunc" in line) and \
                    me in (q.pid for q in p.parents()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def run_round(kind: str, space: Path, storage: Path, gcs: str, log: Path) -> tuple[bool, bool]:
    """One sweep with one fault of `kind`: (injected, survived)."""
    sweep, stages = storage / NAME, storage / "stages"
    launch = ("launch", "--space", str(space), "--storage", str(storage), "--address", gcs)
    if kind == "raise":
        (sweep / INJECT_DIR).mkdir(parents=True)
        (sweep / INJECT_DIR / "intermediate").touch()
    elif kind == "midstage":
        (sweep / INJECT_DIR).mkdir(parents=True)
        (sweep / INJECT_DIR / "kill-pretrain").write_text(f"1 {KILL_AT}")
    proc = cli(*launch, log=log)
    injected = kind == "raise"
    if kind == "lease":
        lease = wait_for(lambda: next(iter(stages.glob(f"*/{LEASE}")), None), proc)
        if lease is not None:
            lease.unlink(missing_ok=True)
            injected = True
    elif kind == "worker":
        rows = sweep / "metrics"
        victim = wait_for(lambda: rows.is_dir() and any(rows.iterdir()) and trial_processes(),
                          proc)
        if victim:
            victim[0].send_signal(signal.SIGKILL)
            injected = True
    elif kind == "driver":
        if wait_for(lambda: any((sweep / "trials").glob("*.parquet")), proc):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            injected = True
            proc = cli("resume", str(sweep), "--address", gcs, log=log)
    code = proc.wait()
    if kind in ("raise", "midstage"):  # the file is gone once a trial took the fault
        injected = not next((sweep / INJECT_DIR).iterdir(), None)
    return injected, code == 0


def keyed(sweep_dir: str) -> dict[tuple, list[float]]:
    """Metric rows by what they measure, not by Tune's trial ids (new in every run): a stored
    stage's rows by its stage key (whichever trial trained it), the rest by the trial's model
    and config. Spend rows are left out: which trial trains a shared stage, and so which one
    reports `reused`, legitimately differs between runs (and after a retry)."""
    trials = {t["trial_id"]: t for t in load(sweep_dir, "trials").to_pylist()}
    rows: dict[tuple, list[float]] = {}
    for r in load(sweep_dir, "metrics").to_pylist():
        t = trials.get(r["trial_id"])
        if t is None or r["split"] == "spend":
            continue
        stage_key = json.loads(t["stage_keys"]).get(r["stage"])
        owner = (stage_key,) if r["stage"] in ("pretrain", "intermediate") else \
            (t["model"], t["config"])
        key = (*owner, r["stage"], r["task"], r["language"], r["split"], r["metric"], r["step"])
        rows.setdefault(key, []).append(r["value"])
    return rows


def compare(base: dict, got: dict) -> tuple[int, int, float]:
    lost = sum(1 for k in base if k not in got)
    dup = sum(len(v) - 1 for v in got.values() if len(v) > 1)
    diff = max((abs(got[k][0] - v[0]) for k, v in base.items() if k in got
                and v[0] is not None and got[k][0] is not None), default=0.0)
    return lost, dup, diff


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10, help="intermediate and target steps")
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here")
    ap.add_argument("--kinds", default=",".join(KINDS), help="the faults to cycle through")
    args = ap.parse_args()

    import ray

    from raysweep.run.sweep import connect

    work = args.out or Path(tempfile.mkdtemp(prefix="raysweep-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / "drivers.log"
    kinds = args.kinds.split(",")
    spaces = {two: write_space(work, args.steps, two) for two in {k == "midstage" for k in kinds}}
    connect(None, cpus=2, verbose=False)
    gcs = ray.get_runtime_context().gcs_address
    try:
        bases = {}
        for two, space in spaces.items():
            base_storage = work / f"uninterrupted{'-2w' if two else ''}"
            proc = cli("launch", "--space", str(space), "--storage", str(base_storage),
                       "--address", gcs, log=log)
            assert proc.wait() == 0, f"the uninterrupted sweep failed; see {log}"
            bases[two] = keyed(str(base_storage / NAME))
        injected = survived = lost = dup = 0
        worst = 0.0
        for i in range(args.rounds):
            kind = kinds[i % len(kinds)]
            t0 = time.perf_counter()
            space = spaces[kind == "midstage"]
            inj, ok = run_round(kind, space, work / f"round-{i:02d}-{kind}", gcs, log)
            got = keyed(str(work / f"round-{i:02d}-{kind}" / NAME))
            rl, rd, diff = compare(bases[kind == "midstage"], got)
            injected, survived = injected + inj, survived + (inj and ok)
            lost, dup, worst = lost + rl, dup + rd, max(worst, diff)
            print(f"round {i}: {kind:6s} injected={inj} survived={ok} lost={rl} dup={rd} "
                  f"max_diff={diff:.3g} ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        ray.shutdown()
    print(json.dumps({"injected": injected, "survived": survived, "rows_lost": lost,
                      "rows_duplicated": dup, "max_metric_diff": worst}))


if __name__ == "__main__":
    main()
