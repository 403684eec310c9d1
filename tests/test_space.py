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
    "too many workers": (lambda r: r["resources"].update(workers=4, cluster_cpus=2),
                         "resources.workers", "cluster offers 2"),
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
