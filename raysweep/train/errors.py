"""Errors the training loop raises on purpose, for the run room to name (raysweep.run.failures:
each is its own failure reason in the trials table)."""

from __future__ import annotations

import math


class NonFiniteLoss(FloatingPointError):
    """A step's loss was NaN or infinite: training has diverged, and every later step would
    only spend compute on a model that is already lost."""

    def __init__(self, task: str, step: int, loss: float):
        super().__init__(f"task {task!r}: loss {loss} at step {step}")
        self.task, self.step, self.loss = task, step, loss

    def __reduce__(self):  # through Ray's pickling with its fields (the step is its row's)
        return (NonFiniteLoss, (self.task, self.step, self.loss))

    @staticmethod
    def check(loss: float, task: str, step: int) -> None:
        if not math.isfinite(loss):
            raise NonFiniteLoss(task, step, loss)
