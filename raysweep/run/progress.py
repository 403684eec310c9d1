"""Sweep progress on the terminal: one line per trial event, with the size's running tally
(done / running / pending) and best objective so far."""

from __future__ import annotations

from ray.tune import Callback

from raysweep.console import make_console

# Module-level: Tune pickles its callbacks, and a Console holds a lock.
_CONSOLE = make_console()


class Progress(Callback):
    def __init__(self, size: str, total: int, mode: str):
        self.size, self.total, self.mode = size, total, mode
        self.started: set[str] = set()
        self.finished: set[str] = set()
        self.best: float | None = None

    def _line(self, trial, what: str, value: float | None) -> None:
        running = len(self.started - self.finished)
        pending = max(0, self.total - len(self.started))
        best = f"{self.best:.4f}" if self.best is not None else "-"
        val = f" objective={value:.4f}" if value is not None else ""
        params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in trial.config.items())
        _CONSOLE.print(f"[cyan]{self.size}[/] {trial.trial_id} {what}{val} ({params}) | "
                       f"{len(self.finished)}/{self.total} done, {running} running, "
                       f"{pending} pending | best {best}", highlight=False)
        _CONSOLE.file.flush()  # progress must show as it happens in logs and pipes too

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.add(trial.trial_id)
        self._line(trial, "started", None)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)
        value = (trial.last_result or {}).get("objective")  # the trial's final objective
        if value is not None and (self.best is None or (value > self.best) == (self.mode == "max")):
            self.best = value
        self._line(trial, "done", value)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished.add(trial.trial_id)
        self._line(trial, "[red]FAILED[/]", None)
