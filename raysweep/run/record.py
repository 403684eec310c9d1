"""The trials table's one writer in a sweep: a Tune callback on the driver that records every
trial once Tune sees it end, from its last report.

Tune calls `on_trial_complete` for a trial that returned (its last report is the runner's
summary, marked `final`) and for one a scheduler stopped (ASHA: its last report is an English
dev evaluation), and `on_trial_error` for one that failed for good (after its retries; a retry
is `on_trial_recover`, which writes nothing) — also one that failed before its first report,
whose row then holds only its identity, status and failure. Rows are files named by trial id,
replaced atomically, so a resumed trial's row replaces its earlier one: one row per trial.
"""

from __future__ import annotations

import os
import time

import cloudpickle
from ray.tune import Callback

from raysweep.plan.build import build_plan
from raysweep.results.rows import trial_row
from raysweep.results.tables import DONE, ERROR, STOPPED, attempts, write_trial
from raysweep.run.failures import TrialFailure, describe, reason
from raysweep.spec import SweepSpec


def as_failure(error: BaseException | None) -> TrialFailure:
    """The trial's `TrialFailure` in what Tune kept (Ray wraps it in a RayTaskError that is an
    instance of it too), or one made from any other error."""
    if isinstance(error, TrialFailure):
        return TrialFailure(error.reason, error.stage, error.step, error.error)
    if error is None:
        return TrialFailure(ERROR, None, None, "failed (Tune kept no error)")
    cause = getattr(error, "cause", None) or error  # a RayTaskError's original exception
    return TrialFailure(reason(cause), None, None, describe(cause))


def _trial_error(trial) -> BaseException | None:
    """The exception Tune kept for a failed trial. Tune pickles it into the trial's local
    directory first and syncs it to storage later, so at `on_trial_error` the storage copy
    (`get_pickled_error`) is usually not there yet: read the local file first."""
    try:
        local = trial.pickled_error_file
        if local and os.path.exists(local):
            with open(local, "rb") as f:
                return cloudpickle.load(f)
        return trial.get_pickled_error()
    except Exception as e:  # noqa: BLE001 - an error that does not unpickle still gets a row
        return e


class RecordTrials(Callback):
    def __init__(self, spec: SweepSpec, model: str, sweep_dir: str):
        self.spec, self.model, self.sweep_dir = spec, model, sweep_dir
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started.setdefault(trial.trial_id, time.time())

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if last.get("recorded"):  # finished in an earlier run of the driver: its row stands
            return
        self._write(trial, DONE if last.get("final") else STOPPED, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._write(trial, ERROR, as_failure(_trial_error(trial)))

    def _write(self, trial, status: str, failure: TrialFailure | None) -> None:
        last = trial.last_result or {}
        plan = build_plan(self.spec, self.spec.model(self.model), dict(trial.config))
        wall = last.get("wall_s") if status == DONE else \
            time.time() - self.started.get(trial.trial_id, time.time())
        row = trial_row(plan, trial.trial_id, status, last, failure and failure.error, wall)
        row["attempt"] = attempts(self.sweep_dir, trial.trial_id) or None
        if failure is not None:
            row.update(failure.columns())
        write_trial(self.sweep_dir, row)
