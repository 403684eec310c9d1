"""The trials table's one writer in a sweep: a Tune callback on the driver that records every
trial once Tune sees it end, from its last report.

Tune calls `on_trial_complete` for a trial that returned (its last report is the runner's
summary, marked `final`) and for one a scheduler stopped (ASHA: its last report is an English
dev evaluation), and `on_trial_error` for one that failed. Rows are files named by trial id,
replaced atomically, so a retried trial's row replaces its earlier one.
"""

from __future__ import annotations

import time

from ray.tune import Callback

from raysweep.plan.build import build_plan
from raysweep.results.rows import trial_row
from raysweep.results.tables import DONE, ERROR, STOPPED, write_trial
from raysweep.spec import SweepSpec


class RecordTrials(Callback):
    def __init__(self, spec: SweepSpec, model: str, sweep_dir: str):
        self.spec, self.model, self.sweep_dir = spec, model, sweep_dir
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.time()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        self._write(trial, DONE if last.get("final") else STOPPED, None)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        error = trial.get_pickled_error()
        self._write(trial, ERROR, f"{type(error).__name__}: {error}" if error else "failed")

    def _write(self, trial, status: str, error: str | None) -> None:
        last = trial.last_result or {}
        plan = build_plan(self.spec, self.spec.model(self.model), dict(trial.config))
        wall = last.get("wall_s") if status == DONE else \
            time.time() - self.started.get(trial.trial_id, time.time())
        write_trial(self.sweep_dir, trial_row(plan, trial.trial_id, status, last, error, wall))
