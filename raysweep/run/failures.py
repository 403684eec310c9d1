"""Why a trial failed, in the words the trials table keeps: a reason, the stage, the step.

Inside a trial, `stage_failures` turns whatever a stage raises into one `TrialFailure` that
names the reason (its own for a NaN/inf loss, for running out of memory and for bad data, else
`error`), the stage and the last step the stage logged, and keeps the original exception's type
and message. It crosses Ray whole (plain fields): Train hands the trial function each worker's
exception (`WorkerGroupError.worker_failures`), `failure_of` picks the trial's, and Tune records
it; `raysweep.run.record` writes it into the trials row.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from raysweep.results.tables import is_uri
from raysweep.tasks.base import TaskDataError
from raysweep.train.errors import NonFiniteLoss

if TYPE_CHECKING:
    from raysweep.plan.stages import StageConfig
    from raysweep.run.runner import TrialRunner

NAN_LOSS, OUT_OF_MEMORY, DATA, ERROR = "nan_loss", "out_of_memory", "data", "error"


class TrialFailure(RuntimeError):
    """A trial that failed for good: `reason` (one of the four above), `stage` and `step`
    (None where unknown) and `error`, the original exception as "Type: message"."""

    def __init__(self, reason: str, stage: str | None, step: int | None, error: str):
        super().__init__(f"{reason} in stage {stage} at step {step}: {error}")
        self.reason, self.stage, self.step, self.error = reason, stage, step, error

    def __reduce__(self):
        return (TrialFailure, (self.reason, self.stage, self.step, self.error))

    def columns(self) -> dict[str, Any]:
        """The trials table's failure columns."""
        return {"error": self.error, "failure": self.reason, "failed_stage": self.stage,
                "failed_step": self.step}


def reason(exc: BaseException) -> str:
    """The failure reason of an exception or of any exception in its chain."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, NonFiniteLoss):
            return NAN_LOSS
        # torch.OutOfMemoryError (CUDA, and the CPU allocator's), or Python's own MemoryError
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
            return OUT_OF_MEMORY
        if isinstance(e, TaskDataError):
            return DATA
        e = e.__cause__ or e.__context__
    return ERROR


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class InjectedFault(RuntimeError):
    """Raised on purpose by `bench/faults.py` (see `inject`)."""


# bench/faults.py's fault injection: a file `<sweep dir>/inject/<stage kind>` makes the next
# trial that starts that stage raise once (rank 0 removes the file first: one trial only).
INJECT_DIR = "inject"


def inject(runner: "TrialRunner", kind: str) -> None:
    if runner.ranks.rank != 0 or is_uri(str(runner.sweep_dir)):
        return
    try:
        os.unlink(os.path.join(str(runner.sweep_dir), INJECT_DIR, kind))
    except FileNotFoundError:
        return
    raise InjectedFault(f"fault injected into stage {kind}")


def kill_injected(runner: "TrialRunner", kind: str, step: int) -> None:
    """bench/faults.py's and tests' dead worker: a file `<sweep dir>/inject/kill-<kind>` that
    holds "<rank> <step>" makes that rank SIGKILL its own process at that step of the next
    `kind` stage that trains, once (the rank removes the file first: after the restart the
    stage runs on). Nothing happens where no such file exists (a stat per step)."""
    if is_uri(str(runner.sweep_dir)):
        return
    path = os.path.join(str(runner.sweep_dir), INJECT_DIR, f"kill-{kind}")
    try:
        with open(path) as f:
            rank, at = (int(x) for x in f.read().split())
    except (FileNotFoundError, ValueError):
        return
    if (rank, at) != (runner.ranks.rank, step):
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def stage_failures(runner: "TrialRunner", stage: "StageConfig") -> Iterator[None]:
    """Run one stage of a trial; a failure leaves as a `TrialFailure` naming it."""
    try:
        inject(runner, stage.kind)
        yield
    except TrialFailure:
        raise
    except Exception as e:
        step = e.step if isinstance(e, NonFiniteLoss) else last_step(runner, stage.kind)
        raise TrialFailure(reason(e), stage.kind, step, describe(e)) from e


def last_step(runner: "TrialRunner", kind: str) -> int | None:
    """The last step this stage logged and has not flushed yet (rank 0 keeps the rows)."""
    for row in reversed(runner.writer.rows):
        if row.get("stage") in (kind, "eval") and row.get("step") is not None:
            return int(row["step"])
    return None


def failure_of(exc: BaseException) -> TrialFailure:
    """The trial's failure in what Train raised: rank 0's `TrialFailure` where there is one
    (it keeps the rows, so it knows the step), else any rank's, else the error itself (a
    worker that died, a Train controller error). A trial run in-process raises its own."""
    if isinstance(exc, TrialFailure):
        return exc
    found = getattr(exc, "worker_failures", None) or {}
    ranked = [found[r] for r in sorted(found)]
    for e in ranked:
        if isinstance(e, TrialFailure) and e.step is not None:
            return TrialFailure(e.reason, e.stage, e.step, e.error)
    for e in ranked:
        if isinstance(e, TrialFailure):
            return TrialFailure(e.reason, e.stage, e.step, e.error)
    cause = ranked[0] if ranked else exc
    return TrialFailure(reason(cause), None, None, describe(cause))
