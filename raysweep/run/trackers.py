"""Trackers: a sweep seen in MLflow, Weights & Biases or TensorBoard, through Ray Tune's own logger
callbacks (`raysweep launch --tracker NAME`, repeatable).

Every trial logs, under its Tune trial id:
- its hyperparameters: the searched config (what Ray's callbacks log) and the rest of what
  identifies it (trial_id, model, n_params, the stage hyperparameters of the trials table);
- each report it makes to Tune, at Tune's training_iteration as the step: the English dev
  `objective` during the target stage, then the summary (objective, zero_shot, wall_s);
- with the summary, its final test scores from the metrics table, one metric per task and
  language (`test/<task>/<language>`; language `all` is the non-English mean; XTREME-R
  aggregates too).

Where each goes, for a sweep directory `<sweep>` on a local disk:
- mlflow: `MLFLOW_TRACKING_URI` where set, else a file store `file:<sweep>/mlruns`; experiment =
  the sweep's name, one run per trial (param `trial_id`). A sweep on s3:// / gs:// needs
  MLFLOW_TRACKING_URI (a file store cannot live there).
- wandb: offline, under `<sweep>/wandb`, unless WANDB_API_KEY is set (or WANDB_MODE says
  otherwise); project WANDB_PROJECT or the sweep's name; run id = trial id.
- tensorboard: event files under `<sweep>/tensorboard/<model>/<trial_id>/` (a sweep on remote
  storage: in the trial's Tune directory, which Ray syncs to `<storage>/tune/`).

The names and the check are import-light (the CLI checks before Ray starts); the Ray callback
classes are composed when a sweep builds them, so that Ray, mlflow and wandb load only then.
"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Sequence

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from raysweep.plan.build import build_plan
from raysweep.results.tables import METRICS_SCHEMA, Location, location
from raysweep.spec import SweepSpec

# tracker -> the module its Ray callback needs; the pip extra of the same name installs it.
TRACKERS = {"mlflow": "mlflow", "wandb": "wandb", "tensorboard": "tensorboardX"}
# MLflow 3.x refuses a file store unless told it is wanted (it is what a laptop sweep needs).
MLFLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


class TrackerError(ValueError):
    """Bad --tracker input; the CLI prints it and exits 2 before Ray starts."""


def check_trackers(names: Sequence[str], local: bool = True) -> tuple[str, ...]:
    """The distinct tracker names, in order; raises TrackerError for an unknown name, a tracker
    whose package is not installed (naming the extra), or MLflow's default file store on a
    sweep directory that is not on a local disk (`local` False)."""
    chosen = tuple(dict.fromkeys(names))
    for name in chosen:
        if name not in TRACKERS:
            raise TrackerError(f"--tracker {name!r}: unknown tracker; allowed: "
                               f"{', '.join(sorted(TRACKERS))}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise TrackerError(f"--tracker {name}: its package {TRACKERS[name]!r} is not "
                               f"installed; install the extra: pip install 'raysweep[{name}]'")
    if "mlflow" in chosen and not local and not os.environ.get("MLFLOW_TRACKING_URI"):
        raise TrackerError("--tracker mlflow: the sweep directory is not on a local disk, so "
                           "MLflow's default file store cannot go under it; set "
                           "MLFLOW_TRACKING_URI (a tracking server or a local file: URI)")
    return chosen


def score_key(task: str, language: str) -> str:
    """The metric name of a final test score; characters MLflow refuses (the `[...]` of a
    partial aggregate) become `_`."""
    return re.sub(r"[^\w\-./ ]", "_", f"test/{task}/{language}")


def final_scores(sweep_dir: str | Location, trial_id: str) -> dict[str, float]:
    """The trial's test scores (stage eval, split test, metric score) from its own metrics
    files, by `score_key`."""
    loc = location(sweep_dir) / "metrics"
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    files = sorted(i.path for i in infos if i.is_file and i.base_name.endswith(".parquet")
                   and i.base_name.startswith(f"{trial_id}-"))  # ids hold no "-"
    if not files:
        return {}
    where = ((pc.field("stage") == "eval") & (pc.field("split") == "test")
             & (pc.field("metric") == "score"))
    rows = ds.dataset(files, format="parquet", schema=METRICS_SCHEMA,
                      filesystem=loc.fs).to_table(filter=where).to_pylist()
    return {score_key(r["task"], r["language"]): r["value"] for r in rows
            if r["value"] is not None}


class _TrialFacts:
    """What each tracker adds to Ray's callback (mixed in before it): the trial's full
    hyperparameters, and its final test scores added to its last report (the runner's summary,
    `final`, reported after the test rows are written)."""

    def _facts(self, spec: SweepSpec, model: str, sweep_dir: Location) -> None:
        self.spec, self.model, self.sweep_dir = spec, model, sweep_dir

    def hparams(self, trial) -> dict[str, Any]:
        """The trial's identity columns that its searched config does not already hold."""
        plan = build_plan(self.spec, self.spec.model(self.model), dict(trial.config))
        return {k: v for k, v in plan.identity_columns(trial.trial_id).items()
                if v is not None and k != "sweep" and k not in trial.config}

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        if result.get("final"):
            result = {**result, **final_scores(self.sweep_dir, trial.trial_id)}
        super().log_trial_result(iteration, trial, result)


class _MLflow(_TrialFacts):
    def log_trial_start(self, trial) -> None:
        super().log_trial_start(trial)
        self.mlflow_util.log_params(run_id=self._trial_runs[trial],
                                    params_to_log=self.hparams(trial))


class _Wandb(_TrialFacts):
    def log_trial_start(self, trial) -> None:
        # Ray's callback builds wandb.init's kwargs from trial.config, then lets ours override
        # them: the config we hand it is the searched one plus the rest of the identity.
        self.kwargs = {**self.kwargs, "config": {**trial.config, **self.hparams(trial)}}
        super().log_trial_start(trial)


class _TensorBoard(_TrialFacts):
    def log_trial_start(self, trial) -> None:
        if not self.sweep_dir.local:  # Ray's place: the trial's directory, synced to storage
            return super().log_trial_start(trial)
        if trial in self._trial_writer:  # a restarted trial appends to its own directory
            self._trial_writer[trial].close()
        logdir = os.path.join(self.sweep_dir.path, "tensorboard", self.model, trial.trial_id)
        self._trial_writer[trial] = self._summary_writer_cls(logdir, flush_secs=30)
        self._trial_result[trial] = {}

    def _try_log_hparams(self, trial, result: dict) -> None:
        """Ray's, with the whole identity (Ray logs the searched params only)."""
        from tensorboardX.summary import hparams

        params = {**trial.evaluated_params, **self.hparams(trial)}
        params = {k: v for k, v in params.items() if isinstance(v, (str, bool, int, float))}
        for summary in hparams(hparam_dict=params, metric_dict=result):
            self._trial_writer[trial].file_writer.add_summary(summary)


def mlflow_uri(sweep_dir: Location) -> str:
    """MLFLOW_TRACKING_URI where set, else the file store under a local sweep directory."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if not sweep_dir.local:
        raise TrackerError("--tracker mlflow needs MLFLOW_TRACKING_URI for a sweep directory "
                           "that is not on a local disk")
    os.environ.setdefault(MLFLOW_FILE_STORE_ENV, "true")
    return "file:" + os.path.join(sweep_dir.path, "mlruns")


def _build(name: str, sweep_dir: Location, sweep: str):
    """Ray's callback for `name`, with its settings, and our mixin for it."""
    if name == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return _MLflow, MLflowLoggerCallback, dict(tracking_uri=mlflow_uri(sweep_dir),
                                                   experiment_name=sweep)
    if name == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        kwargs: dict[str, Any] = {"project": os.environ.get("WANDB_PROJECT") or sweep}
        if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
            # Ray asks for a key unless WANDB_MODE says offline in the driver's environment;
            # its logging actors get only the key, so the mode goes to wandb.init as well.
            os.environ["WANDB_MODE"] = "offline"
            kwargs["mode"] = "offline"
        if sweep_dir.local:
            kwargs["dir"] = os.path.join(sweep_dir.path, "wandb")
            os.makedirs(kwargs["dir"], exist_ok=True)
        return _Wandb, WandbLoggerCallback, kwargs
    from ray.tune.logger import TBXLoggerCallback

    return _TensorBoard, TBXLoggerCallback, {}


def tracker_callbacks(names: Sequence[str], spec: SweepSpec, model: str,
                      sweep_dir: Location) -> list:
    """One Ray Tune logger callback per tracker, for the Tuner of one model size."""
    out = []
    for name in check_trackers(names, sweep_dir.local):
        mixin, base, kwargs = _build(name, sweep_dir, os.path.basename(sweep_dir.path))
        callback = type(f"{base.__name__}Tracker", (mixin, base), {})(**kwargs)
        callback._facts(spec, model, sweep_dir)
        out.append(callback)
    return out
