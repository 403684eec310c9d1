"""Search spaces: the shipped ones parse; every kind of bad input exits 2 before Ray starts,
naming the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.spec import SPACES_DIR, SpaceError, load_space

runner = CliRunner()
BASE = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())


def _write(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in SPACES_DIR.glob("*.yaml")))
def test_shipped_spaces_parse(name):
    spec, file = load_space(name, cluster_cpus=10_000, cluster_gpus=10_000)
    assert spec.models and file.exists()


BAD = {
    "unknown key": (lambda r: r["stages"]["target"].update(stepz=3), "stages.target.stepz",
                    "allowed keys"),
    "unknown key in a mixture": (lambda r: r["mixtures"]["english"].update(weights=1),
                                 "mixtures.english.weights", "allowed keys: tasks, kind"),
    "wrong type": (lambda r: r["stages"]["target"].update(steps="many"), "stages.target.steps",
                   "integer"),
    "unknown task": (lambda r: r["stages"]["target"].update(tasks=["no_such_task"]),
                     "stages.target.tasks.0", "known tasks"),
    "unknown intermediate task": (lambda r: r["mixtures"]["english"].update(tasks={"nope": 1.0}),
                                  "mixtures.english.tasks.nope", "known tasks"),
    "unknown model": (lambda r: r["models"][1].update(tiny="llama-tiny-xxl"), "models.1.tiny",
                      "allowed"),
    "inverted lr range": (lambda r: r["search"].update(
        algorithm="optuna", params={**r["search"]["params"], "lr_target": {"loguniform": [1e-2, 1e-4]}}),
        "search.params.lr_target.loguniform", "inverted"),
    "non-positive lr": (lambda r: r["search"]["params"].update(lr_target={"values": [1e-3, 0]}),
                        "search.params.lr_target.values.1", "positive"),
    # The cluster's size is stated, so the case fails the same way on any machine.
    # (tiny_scaling sets workers per model, so the size's own key is the one named)
    "too many workers": (lambda r: (r["resources"].update(cluster_cpus=2),
                                    r["models"][1].update(workers=4)),
                         "models.1.workers", "cluster offers 2"),
    "unknown mixture": (lambda r: r["search"]["params"].update(mixture={"values": ["none", "x"]}),
                        "search.params.mixture.values.1", "unknown mixture"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_exits_2_with_key_path(tmp_path, case):
    mutate, key_path, allowed = BAD[case]
    path = _write(tmp_path, mutate)
    result = runner.invoke(app, ["launch", "--space", str(path), "--storage", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich wraps long lines
    assert str(path) in message.replace(" ", "") or path.name in message
    assert key_path in message, message
    assert allowed in message, message
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_unknown_space_lists_known(tmp_path):
    with pytest.raises(SpaceError, match="known spaces: .*tiny_scaling"):
        load_space("no_such_space")


def test_dry_run_prints_plan_without_ray():
    import ray

    # (Another test of the session may have started the shared local Ray already.)
    before = ray.is_initialized()
    result = runner.invoke(app, ["launch", "--space", "tiny_scaling", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "pretrain(" in result.output and "tiny-m" in result.output
    assert ray.is_initialized() == before


def test_another_space_cannot_reuse_a_sweep_directory(tmp_path):
    """Relaunching resumes; a different space under the same name exits 2 before Ray starts,
    and the earlier sweep's files stay as they were."""
    import json

    import ray

    before = ray.is_initialized()  # the session's shared Ray may be up already
    spec, _ = load_space("tiny_scaling")
    sweep_dir = tmp_path / "runs" / "tiny_scaling"
    sweep_dir.mkdir(parents=True)
    other = {**spec.normalized, "description": "another study"}
    (sweep_dir / "space.json").write_text(json.dumps(other))
    result = runner.invoke(app, ["launch", "--space", "tiny_scaling", "--storage",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "holds a sweep of another space" in " ".join(result.output.split())
    assert json.loads((sweep_dir / "space.json").read_text()) == other
    assert ray.is_initialized() == before
    assert not (tmp_path / "runs" / "tune").exists()  # no Tuner was created


def test_a_sweep_written_before_a_setting_existed_is_the_same_space():
    """A space.json without a field added since (here `faults`) is the same space with that
    field's default, so a relaunch after an upgrade resumes it; another value is another space."""
    import json

    from raysweep.run.sweep import same_space

    spec, _ = load_space("tiny_scaling")
    older = {k: v for k, v in spec.normalized.items() if k != "faults"}
    assert same_space(json.dumps(older), spec)
    changed = {**spec.normalized, "faults": {**spec.normalized["faults"], "trial_retries": 7}}
    assert not same_space(json.dumps(changed), spec)
    assert not same_space("{not json", spec)
    assert not same_space(json.dumps({**older, "no_such_setting": 1}), spec)


def test_tiny_scaling_shows_both_ways_a_trial_runs():
    """The embedded default keeps one size on 2 FSDP2 ranks in a Train job (the GPU path), two
    such trials at once at half a CPU per rank; its larger sizes run 1-worker trials in their own
    Tune trial processes, holding the CPU themselves, two at once on 2 cores. A 1-worker trial's
    worker restarts are trial retries."""
    from raysweep.run.sweep import max_concurrent, trial_resources, trial_retries
    from raysweep.run.trial import in_process
    from raysweep.plan.build import build_plan
    from raysweep.spec.space import threads_for

    spec, _ = load_space("tiny_scaling")
    xs, s, m = (spec.model(n) for n in ("tiny-xs", "tiny-s", "tiny-m"))
    assert (spec.workers(xs), spec.cpus_per_worker(xs)) == (2, 0.5)
    assert max_concurrent(spec, xs, 2) == 2 and max_concurrent(spec, s, 2) == 2
    assert trial_resources(spec, xs) == {"cpu": 0, "memory": 64 * 2**20}
    assert trial_resources(spec, m) == {"cpu": 1, "gpu": 0}
    params = {"lr_target": 1e-3, "lr_intermediate": 2e-3, "mixture": "none", "seed": 0}
    assert not in_process(build_plan(spec, xs, params)) and in_process(build_plan(spec, m, params))
    assert threads_for(0.5) == 1 and threads_for(2) == 2 and threads_for(2.5) == 2
    raw = {**spec.normalized, "faults": {**spec.normalized["faults"], "trial_retries": 1,
                                         "worker_restarts": 2}}
    spec2 = type(spec).model_validate(raw)
    assert trial_retries(spec2, m) == 3 and trial_retries(spec2, xs) == 1
