"""Mid-stage checkpoints (raysweep.run.resume): a trial resumed from any of its checkpoints
writes exactly the rows an uninterrupted run writes, bitwise (CPU fp32), none lost or doubled.

Here in one process (the in-process trial's case): the runner's `report` keeps every checkpoint
it is handed, and a fresh runner resumes from one of them. The real thing, a SIGKILLed Train
worker of a 2-worker trial, is `test_a_killed_worker_resumes_mid_stage` (slow, Ray)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from raysweep.plan.build import build_plan
from raysweep.results.tables import load
from raysweep.run.runner import TrialRunner
from raysweep.spec import SweepSpec, load_space

TIMING = ("wall_s", "device_s")  # measured, not computed: the only columns allowed to differ


def plan_with(every: int, **faults):
    spec, _ = load_space("tiny_scaling")
    raw = spec.model_dump(mode="json")
    raw["models"] = [{**raw["models"][0], "pretrain_steps": 20}]
    raw["stages"]["intermediate"].update(steps=10, log_every=5)
    raw["stages"]["target"].update(steps=10, eval_every=6, log_every=4)
    raw["stages"]["eval"]["max_examples"] = 40
    raw["faults"] = {**raw.get("faults", {}), "checkpoint_every": every, **faults}
    spec = SweepSpec.model_validate(raw)
    return build_plan(spec, spec.models[0], {"lr_target": 3e-3, "lr_intermediate": 2e-3,
                                             "mixture": "english", "seed": 0})


def rows(sweep: Path) -> list[tuple]:
    out = [tuple((k, v) for k, v in sorted(r.items()) if k not in TIMING)
           for r in load(sweep, "metrics").to_pylist()]
    return sorted(out, key=repr)


def run_keeping(tmp_path: Path, plan, name: str) -> tuple[dict, dict[str, Path]]:
    """An uninterrupted run that keeps a copy of every checkpoint it reports, by name."""
    kept: dict[str, Path] = {}

    def report(metrics, checkpoint=None):
        if checkpoint is not None:
            assert metrics["checkpoint"] == Path(checkpoint).name
            kept[checkpoint.name] = shutil.copytree(checkpoint, tmp_path / "kept" / name /
                                                    checkpoint.name)

    torch.set_num_threads(1)
    summary = TrialRunner(plan, tmp_path / name, tmp_path / name / "sweep", "t0",
                          report=report).run()
    return summary, kept


def resume_from(tmp_path: Path, plan, ckpt: Path, name: str) -> dict:
    """A restart: a fresh runner (fresh store and tables: what the checkpoint does not hold
    must be recomputed, and rows before it must come from it) resumed from `ckpt`."""
    torch.set_num_threads(1)
    return TrialRunner(plan, tmp_path / name, tmp_path / name / "sweep", "t0",
                       latest_checkpoint=lambda: ckpt).run()


def test_checkpoint_every_is_in_no_stage_key():
    keys = {every: [s.key for s in plan_with(every).stages] for every in (0, 3, 100)}
    assert keys[0] == keys[3] == keys[100]
    assert plan_with(3).checkpoint_every == 3


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """One uninterrupted run, checkpointing every 3 steps, its checkpoints kept."""
    tmp = tmp_path_factory.mktemp("midstage")
    plan = plan_with(3)
    summary, kept = run_keeping(tmp, plan, "full")
    target = next(i for i, s in enumerate(plan.stages) if s.kind == "target")
    return tmp, plan, summary, kept, rows(tmp / "full" / "sweep"), target


def test_resume_inside_a_log_window_gives_the_same_rows(full):
    """Pretrain (20 steps, one log at step 20) resumed from its step-9 checkpoint: the open
    window's partial loss sum travels, and every metric row of the whole trial equals the
    uninterrupted run's, value for value."""
    tmp, plan, summary, kept, reference, _ = full
    assert len(reference) > 20
    got = resume_from(tmp, plan, kept["ckpt-s0-t0-0000009"], "from-pretrain")
    assert (got["objective"], got["zero_shot"]) == (summary["objective"], summary["zero_shot"])
    assert rows(tmp / "from-pretrain" / "sweep") == reference


@pytest.mark.parametrize("step", [3, 6])
def test_resume_in_a_target_task_gives_the_same_rows(full, step):
    """The target task (dev evaluations at 6 and 10) resumed at step 3 (mid-chunk), and at
    step 6, an evaluation step, whose checkpoint is taken after the evaluation: its dev rows
    exist once. The stages before were the first run's: the target's and eval's rows equal."""
    tmp, plan, summary, kept, reference, target = full
    name = f"ckpt-s{target}-t0-{step:07d}"
    got = resume_from(tmp, plan, kept[name], f"from-{step}")
    assert (got["objective"], got["zero_shot"]) == (summary["objective"], summary["zero_shot"])

    def later(rs):
        return [r for r in rs if dict(r)["stage"] in ("target", "eval")]

    resumed = later(rows(tmp / f"from-{step}" / "sweep"))
    assert resumed == later(reference) and len(resumed) > 10
    dev = [r for r in resumed if dict(r)["split"] == "validation" and dict(r)["step"] == 6]
    assert dev and len(dev) == len(set(dev))


def test_a_checkpoint_of_another_world_size_is_refused(full, tmp_path):
    _, plan, _, kept, _, _ = full
    ckpt = shutil.copytree(next(iter(kept.values())), tmp_path / "ckpt")
    state = torch.load(ckpt / "rank0.pt", weights_only=False)
    torch.save({**state, "world": 2}, ckpt / "rank0.pt")
    with pytest.raises(RuntimeError, match="checkpoint of 2 ranks"):
        TrialRunner(plan, tmp_path / "x", tmp_path / "x" / "sweep", "t0",
                    latest_checkpoint=lambda: ckpt)


# --- on a real local Ray (the session's, tests/conftest.py) ------------------------------------

def two_worker_space(tmp_path: Path, name: str) -> Path:
    """One trial of 2 Train workers (no intermediate stage), pretraining 20 steps logged every
    2, checkpointed every 5, one worker restart allowed."""
    import yaml

    from test_sweep import quick_space

    _, file = quick_space(tmp_path, name=name, params={
        "lr_target": {"values": [3e-3]}, "lr_intermediate": {"values": [2e-3]},
        "mixture": {"values": ["none"]}})
    raw = yaml.safe_load(Path(file).read_text())
    raw["stages"]["pretrain"]["log_every"] = 2
    raw["resources"] = {"workers": 2, "cpus_per_worker": 1}
    raw["faults"] = {"worker_restarts": 1, "checkpoint_every": 5}
    Path(file).write_text(yaml.safe_dump(raw))
    return Path(file)


@pytest.mark.slow
def test_a_killed_worker_resumes_mid_stage(ray_cluster, tmp_path):
    """Rank 1 of a 2-worker trial SIGKILLs itself at pretrain step 13 (one shot: an inject
    file). Train restarts the worker group, which takes over the dead rank 0's stage lease and
    resumes from the step-10 checkpoint. The trial completes with one trials row, and every
    metric row (the loss curve from step 12 on included) equals, bitwise, an uninterrupted run
    of the same plan on 2 gloo ranks without Ray."""
    from typer.testing import CliRunner

    from raysweep.cli.app import app
    from raysweep.run.failures import INJECT_DIR
    from test_multinode import Reference

    file = two_worker_space(tmp_path, "killed")
    sweep = tmp_path / "runs" / "killed"
    (sweep / INJECT_DIR).mkdir(parents=True)
    (sweep / INJECT_DIR / "kill-pretrain").write_text("1 13")
    reference = Reference.start(file, tmp_path / "ref")
    out = CliRunner().invoke(app, ["launch", "--space", str(file), "--storage",
                                   str(tmp_path / "runs"), "--address", ray_cluster],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    ref_dir = reference.wait()
    assert not (sweep / INJECT_DIR / "kill-pretrain").exists()  # the fault fired
    trials = load(sweep, "trials").to_pylist()
    assert len(trials) == 1 and trials[0]["status"] == "done"
    ckpts = sorted(p.name for p in (tmp_path / "runs" / "train").glob("*/ckpt-*"))
    assert ckpts, "no checkpoint reached the run's storage"
    # Resumed, not rerun from the start: each checkpoint was reported to Tune once.
    result, = (tmp_path / "runs" / "tune").glob("*/run_trial_*/result.json")
    reported = [c for c in (json.loads(line).get("checkpoint")
                            for line in result.read_text().splitlines()) if c]
    assert reported[:3] == [f"ckpt-s0-t0-{s:07d}" for s in (5, 10, 15)], reported
    assert len(reported) == len(set(reported)), reported

    def curve(where):
        return {dict(r)["step"]: dict(r)["value"] for r in rows(where)
                if dict(r)["stage"] == "pretrain" and dict(r)["metric"] == "loss"}

    got, want = curve(sweep), curve(ref_dir)
    assert sorted(got) == list(range(2, 21, 2)) and got == want  # after the restart (12..20) too

    def measured(where):  # every row, but whose it is (trial ids differ)
        return sorted((tuple((k, v) for k, v in r if k not in ("trial_id", "sweep", "attempt"))
                       for r in rows(where)), key=repr)
    assert measured(sweep) == measured(ref_dir)
