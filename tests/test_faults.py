"""Faults with nothing lost: rows written once per identity across attempts, failures named by
reason/stage/step, and (slow, real Ray) a failing trial's row and exit status, and a sweep whose
driver is SIGKILLed and then resumed."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from typer.testing import CliRunner

from raysweep.results.tables import (METRICS_SCHEMA, MetricsWriter, atomic_write, begin_attempt,
                                     load)
from raysweep.run.failures import (DATA, ERROR, NAN_LOSS, OUT_OF_MEMORY, TrialFailure,
                                   failure_of, reason)
from raysweep.tasks.base import TaskDataError
from raysweep.train.errors import NonFiniteLoss

BASE = {"sweep": "s", "trial_id": "t1", "model": "m"}


def _write(sweep, attempt: int, label: str, stage: str, task: str, value: float, n: int = 3):
    w = MetricsWriter(sweep, "t1", BASE, attempt=attempt)
    for step in range(n):
        w.add(stage=stage, task=task, language="en", split="train", metric="loss",
              value=value, step=step)
    w.flush(label)


def test_a_rerun_replaces_its_rows_instead_of_adding_them(tmp_path):
    """Attempt 1 trains pretrain and a target task; attempt 2 (pretrain loaded from the store)
    redoes the target task: its rows replace attempt 1's, pretrain's stay; nothing doubles."""
    assert begin_attempt(tmp_path, "t1") == 1
    _write(tmp_path, 1, "pretrain", "pretrain", "corpus", 1.0)
    _write(tmp_path, 1, "target-x", "target", "x", 2.0)
    assert begin_attempt(tmp_path, "t1") == 2
    _write(tmp_path, 2, "target-x", "target", "x", 3.0)
    rows = load(tmp_path, "metrics").to_pylist()
    assert len(rows) == 6
    assert sorted((r["stage"], r["attempt"], r["value"]) for r in rows)[::3] == [
        ("pretrain", 1, 1.0), ("target", 2, 3.0)]
    assert len(list((tmp_path / "metrics").iterdir())) == 2  # same names: replaced


def test_a_finished_trial_is_known_by_its_row(tmp_path):
    """What keeps a resume from rerunning a trial that finished after Tune's last snapshot:
    its trials row says done (an error row does not count)."""
    from raysweep.results.tables import finished_trial, write_trial

    assert finished_trial(tmp_path, "t1") is None
    write_trial(tmp_path, {**BASE, "status": "error"})
    assert finished_trial(tmp_path, "t1") is None
    write_trial(tmp_path, {**BASE, "status": "done", "objective": 0.5})
    assert finished_trial(tmp_path, "t1")["objective"] == 0.5


def test_highest_attempt_wins_whatever_the_file_names(tmp_path):
    """Where two attempts' files of one (trial, stage, task) both exist (the older layout named
    files by a random attempt id), the rows of the higher attempt number win, even when its file
    name sorts first."""
    for attempt, name, value in ((2, "t1-target-aaaa-0000", 2.0), (1, "t1-target-zzzz-0000", 1.0)):
        rows = [{**BASE, "stage": "target", "task": "x", "metric": "loss", "value": value,
                 "step": s, "attempt": attempt} for s in range(4)]
        atomic_write(pa.Table.from_pylist(rows, METRICS_SCHEMA),
                     tmp_path / "metrics" / f"{name}.parquet")
    other = [{**BASE, "trial_id": "t2", "stage": "target", "task": "x", "value": 9.0, "step": 0,
              "attempt": None}]  # a one-attempt trial of the older layout is left as it is
    atomic_write(pa.Table.from_pylist(other, METRICS_SCHEMA), tmp_path / "metrics" / "t2.parquet")
    rows = load(tmp_path, "metrics").to_pylist()
    assert sorted((r["trial_id"], r["value"]) for r in rows) == [("t1", 2.0)] * 4 + [("t2", 9.0)]


def test_failure_reasons():
    assert reason(NonFiniteLoss("x", 3, float("nan"))) == NAN_LOSS
    assert reason(torch.OutOfMemoryError("CUDA out of memory")) == OUT_OF_MEMORY
    assert reason(MemoryError()) == OUT_OF_MEMORY
    assert reason(TaskDataError("task 'xnli': no file")) == DATA
    try:  # found through the chain: a data error re-raised as something else
        try:
            raise TaskDataError("bad record")
        except TaskDataError as e:
            raise RuntimeError("loading failed") from e
    except RuntimeError as e:
        assert reason(e) == DATA
    assert reason(ValueError("x")) == ERROR


def test_failure_crosses_pickling_and_train_picks_rank_0():
    """What Train raises holds each rank's exception: the trial's failure is rank 0's (it keeps
    the rows, so it knows the step); a dead worker's error is an `error` with its message."""
    from ray.train.v2.api.exceptions import WorkerGroupError

    f = pickle.loads(pickle.dumps(TrialFailure(NAN_LOSS, "target", 3, "NonFiniteLoss: nan")))
    assert (f.reason, f.stage, f.step, f.error) == (NAN_LOSS, "target", 3, "NonFiniteLoss: nan")
    group = WorkerGroupError("2 workers failed", {
        1: TrialFailure(NAN_LOSS, "target", None, "NonFiniteLoss: a"),
        0: TrialFailure(NAN_LOSS, "target", 7, "NonFiniteLoss: b")})
    got = failure_of(pickle.loads(pickle.dumps(group)))
    assert (got.reason, got.stage, got.step) == (NAN_LOSS, "target", 7)
    died = failure_of(WorkerGroupError("died", {1: RuntimeError("worker 1 died")}))
    assert (died.reason, died.stage, died.error) == (ERROR, None, "RuntimeError: worker 1 died")


def test_the_driver_reads_the_failure_tune_kept():
    """Tune keeps a failed trial's error as Ray's RayTaskError, made an instance of the
    trial's TrialFailure, and pickled: the row's fields come through that; any other error is
    named by its own type (not RayTaskError's)."""
    import cloudpickle
    from ray.exceptions import RayTaskError

    from raysweep.run.record import as_failure

    def kept(cause):
        return cloudpickle.loads(cloudpickle.dumps(
            RayTaskError("run_trial", "Traceback ...", cause).as_instanceof_cause()))

    got = as_failure(kept(TrialFailure(OUT_OF_MEMORY, "intermediate", 40, "OutOfMemoryError: x")))
    assert (got.reason, got.stage, got.step, got.error) == (
        OUT_OF_MEMORY, "intermediate", 40, "OutOfMemoryError: x")
    got = as_failure(kept(TaskDataError("xnli: no file")))
    assert (got.reason, got.stage, got.error) == (DATA, None, "TaskDataError: xnli: no file")


def test_nan_loss_fails_the_trial_with_its_stage_and_step(tmp_path):
    """A learning rate that blows the target stage up: the loop stops at the first non-finite
    loss and the trial fails with reason nan_loss, stage target, the step it happened at."""
    from raysweep.plan.build import build_plan
    from raysweep.run.runner import TrialRunner
    from raysweep.spec import SweepSpec, load_space

    raw = load_space("tiny_scaling")[0].model_dump(mode="json")
    raw["models"] = [{**raw["models"][0], "pretrain_steps": 20}]
    raw["stages"]["target"].update(steps=10, eval_every=5, log_every=5)
    raw["stages"]["eval"]["max_examples"] = 40
    spec = SweepSpec.model_validate(raw)
    plan = build_plan(spec, spec.models[0], {"lr_target": 1e30, "lr_intermediate": 2e-3,
                                             "mixture": "none", "seed": 0})
    torch.set_num_threads(1)
    with pytest.raises(TrialFailure) as got:
        TrialRunner(plan, tmp_path, tmp_path / "sweep", "t0").run()
    f = got.value
    assert (f.reason, f.stage) == (NAN_LOSS, "target"), f
    assert f.step is not None and 1 <= f.step <= plan.stage("target").steps
    assert f.error.startswith("NonFiniteLoss: ")


# --- on a real local Ray (the session's, tests/conftest.py) ------------------------------------

def _quick(tmp_path, name: str, params: dict):
    from test_sweep import quick_space

    return quick_space(tmp_path, name=name, params=params)


@pytest.mark.slow
def test_a_failing_trial_gets_its_row_and_the_sweep_exits_1(ray_cluster, tmp_path):
    """One trial's loss turns NaN in its target stage before its first report, the other
    finishes: the sweep goes on, each trial has one row, the failed one with its reason, stage
    and step, and `launch` exits 1 with a summary line."""
    from raysweep.cli.app import app

    _, file = _quick(tmp_path, "fails", {"lr_target": {"values": [1e30, 3e-3]},
                                         "lr_intermediate": {"values": [2e-3]},
                                         "mixture": {"values": ["none"]}})
    out = CliRunner().invoke(app, ["launch", "--space", str(file), "--storage",
                                   str(tmp_path / "runs"), "--address", ray_cluster],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 1, out.output
    assert "1 trial(s) failed (nan_loss: 1)" in out.output
    trials = {t["lr_target"]: t for t in load(tmp_path / "runs" / "fails", "trials").to_pylist()}
    assert sorted(trials) == [3e-3, 1e30]
    bad, good = trials[1e30], trials[3e-3]
    assert good["status"] == "done" and good["failure"] is None
    assert (bad["status"], bad["failure"], bad["failed_stage"]) == ("error", "nan_loss", "target")
    assert bad["failed_step"] is not None and bad["error"].startswith("NonFiniteLoss: ")
    assert bad["objective"] is None and bad["attempt"] == 1  # it never reported


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.slow
def test_resume_after_the_driver_is_sigkilled(ray_cluster, tmp_path):
    """The driver is SIGKILLed while the second trial trains its own intermediate stage (its
    lease held): `raysweep resume` finishes the sweep. Each trial has exactly one row, the first
    trial's row and metrics files are byte-identical, no metric row is doubled, and the dead
    holder's lease was taken over."""
    from raysweep.cli.app import app
    from raysweep.run.store import LEASE

    _, file = _quick(tmp_path, "killed", {"lr_target": {"values": [3e-3]},
                                          "lr_intermediate": {"values": [2e-3, 3e-3]},
                                          "mixture": {"values": ["english"]}})
    storage = tmp_path / "runs"
    sweep, stages = storage / "killed", storage / "stages"
    with open(tmp_path / "driver.log", "wb") as log:
        driver = subprocess.Popen([sys.executable, "-m", "raysweep.cli.app", "launch", "--space",
                                   str(file), "--storage", str(storage), "--address",
                                   ray_cluster], stdout=log, stderr=subprocess.STDOUT)
    try:
        def second_holds_a_lease() -> bool:
            rows = list((sweep / "trials").glob("*.parquet"))
            return len(rows) == 1 and any((d / LEASE).exists()
                                          for d in stages.glob("intermediate-*"))

        _wait(second_holds_a_lease, 900, "the second trial's intermediate lease")
        dead = next((d / LEASE).read_text() for d in stages.glob("intermediate-*")
                    if (d / LEASE).exists())
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    first, = [p.stem for p in (sweep / "trials").glob("*.parquet")]  # the finished trial
    before = {p.relative_to(sweep): p.read_bytes() for d in ("trials", "metrics")
              for p in (sweep / d).glob(f"{first}*.parquet")}
    assert len(before) > 5
    out = CliRunner().invoke(app, ["resume", str(sweep), "--address", ray_cluster],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "resuming" in out.output
    trials = load(sweep, "trials").to_pylist()
    assert len(trials) == 2 and len({t["trial_id"] for t in trials}) == 2
    assert {t["status"] for t in trials} == {"done"}
    for rel, data in before.items():  # the first trial is not rerun: its files are untouched
        assert (sweep / rel).read_bytes() == data, rel
    assert {t["trial_id"]: t["attempt"] for t in trials}[first] == 1
    metrics = load(sweep, "metrics").to_pylist()
    keys = [(r["trial_id"], r["stage"], r["task"], r["language"], r["split"], r["metric"],
             r["step"]) for r in metrics]
    assert len(keys) == len(set(keys))  # no row twice
    assert {r["stage"] for r in metrics} == {"pretrain", "intermediate", "target", "eval"}
    done = [d for d in stages.glob("intermediate-*")]
    assert len(done) == 2 and all((d / "STATUS").exists() and not (d / LEASE).exists()
                                  for d in done)
    holders = {d.name: (d / "STATUS").read_text() for d in done}
    assert not any(json_token(dead) in h for h in holders.values())  # taken over, not finished


def json_token(lease_text: str) -> str:
    import json

    return json.loads(lease_text)["token"]
