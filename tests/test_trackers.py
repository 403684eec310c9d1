"""`raysweep launch --tracker`: a sweep's trials in MLflow and TensorBoard (read back through their
own readers, no network), and the bad input that exits 2 before Ray starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.results.tables import MetricsWriter, load
from raysweep.run import trackers
from raysweep.run.trackers import TrackerError, check_trackers, final_scores, score_key


def test_unknown_tracker_exits_2_before_ray():
    # --dry-run: were the check skipped, the plan would print (exit 0) and no Ray would start.
    out = CliRunner().invoke(app, ["launch", "--space", "tiny_scaling", "--dry-run",
                                   "--tracker", "mlflw"])
    assert out.exit_code == 2, out.output
    assert "unknown tracker; allowed: mlflow, tensorboard, wandb" in out.output


def test_missing_package_names_the_extra(monkeypatch):
    # The table says which module a tracker needs; point one at a module that is not there.
    monkeypatch.setitem(trackers.TRACKERS, "wandb", "raysweep_no_such_package")
    out = CliRunner().invoke(app, ["launch", "--space", "tiny_scaling", "--dry-run",
                                   "--tracker", "tensorboard", "--tracker", "wandb"])
    assert out.exit_code == 2, out.output
    assert "pip install 'raysweep[wandb]'" in out.output


def test_mlflow_file_store_needs_a_local_sweep(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackerError, match="MLFLOW_TRACKING_URI"):
        check_trackers(["mlflow"], local=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert check_trackers(["mlflow", "tensorboard", "mlflow"], local=False) == (
        "mlflow", "tensorboard")


def test_final_scores_are_the_trials_own_test_rows(tmp_path):
    for trial, value in (("a_00000", 0.5), ("a_00001", 0.7)):
        w = MetricsWriter(tmp_path, trial, {"sweep": "s", "model": "m"})
        w.add(stage="eval", task="syn_xnli", language="de", split="test", metric="score",
              value=value)
        w.add(stage="eval", task="syn_xnli", language="en", split="validation",
              metric="score", value=0.9)
        w.add(stage="eval", task="xtreme_r_syn_partial[syn_xnli]", language="all",
              split="test", metric="score", value=value / 2)
        w.flush("eval")
    assert final_scores(tmp_path, "a_00001") == {
        "test/syn_xnli/de": 0.7, "test/xtreme_r_syn_partial_syn_xnli_/all": 0.35}
    assert score_key("xtreme_r_syn_partial[syn_xnli]", "all") == \
        "test/xtreme_r_syn_partial_syn_xnli_/all"
    assert final_scores(tmp_path, "b_00000") == {}


@pytest.mark.slow
def test_two_trial_sweep_reads_back_from_mlflow_and_tensorboard(ray_cluster, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_sweep import quick_space

    _, file = quick_space(tmp_path, name="tracked")
    out = CliRunner().invoke(app, ["launch", "--space", str(file), "--storage",
                                   str(tmp_path / "runs"), "--tracker", "mlflow",
                                   "--tracker", "tensorboard"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    sweep = tmp_path / "runs" / "tracked"
    trials = {t["trial_id"]: t for t in load(sweep, "trials").to_pylist()}
    assert len(trials) == 2 and {t["status"] for t in trials.values()} == {"done"}
    metrics = load(sweep, "metrics").to_pylist()
    tests = {t: {score_key(r["task"], r["language"]): r["value"] for r in metrics
                 if r["trial_id"] == t and r["stage"] == "eval" and r["split"] == "test"
                 and r["metric"] == "score"} for t in trials}
    assert all(len(v) >= 2 for v in tests.values())  # per language, and the non-English mean

    # MLflow: one run per trial in the sweep's experiment, in the file store under the sweep.
    client = MlflowClient(tracking_uri=f"file:{sweep / 'mlruns'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.data.params["trial_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(trials)
    for trial_id, t in trials.items():
        run = runs[trial_id]
        params, values = run.data.params, run.data.metrics
        assert float(params["lr_target"]) == t["lr_target"]  # searched: Ray logs it
        assert params["model"] == "tiny-xs" and int(params["n_params"]) == t["n_params"]
        assert int(params["seed"]) == t["seed"] and params["mixture"] == t["mixture"]
        assert values["zero_shot"] == t["zero_shot"]
        assert values["objective"] == t["objective"]
        for key, value in tests[trial_id].items():
            assert values[key] == value, key
        # Every dev report, not just the last: the target stage's reports, then the summary.
        history = client.get_metric_history(run.info.run_id, "objective")
        assert len(history) >= 2 and history[-1].value == t["objective"]

    # TensorBoard: event files under the sweep, one directory per trial.
    for trial_id, t in trials.items():
        events = EventAccumulator(str(sweep / "tensorboard" / "tiny-xs" / trial_id))
        events.Reload()
        scalars = events.Tags()["scalars"]
        last = {tag: events.Scalars(tag)[-1].value for tag in scalars}
        # Event files hold 32-bit floats.
        assert last["ray/tune/zero_shot"] == pytest.approx(t["zero_shot"], rel=1e-6)
        assert last["ray/tune/objective"] == pytest.approx(t["objective"], rel=1e-6)
        for key, value in tests[trial_id].items():
            assert last[f"ray/tune/{key}"] == pytest.approx(value, rel=1e-6), key
        # The hyperparameters, written when the trial ends (TensorBoard's HParams plugin).
        from tensorboard.plugins.hparams import plugin_data_pb2

        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
        assert hparams.hparams["trial_id"].string_value == trial_id
        assert hparams.hparams["lr_target"].number_value == t["lr_target"]
        assert hparams.hparams["n_params"].number_value == t["n_params"]
