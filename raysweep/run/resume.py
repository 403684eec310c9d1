"""Mid-stage checkpoints: a trial that restarts (Ray Train restarting its worker group, or Tune
retrying an in-process trial) continues inside the stage it was in, as if nothing had happened.

Every training stage (a stored stage's training, each target task's fine-tuning) checkpoints
every `faults.checkpoint_every` steps (`TrialPlan.checkpoint_every`; 0: never). A checkpoint is a
directory handed to the runner's `report(metrics, checkpoint=dir)`; the runner reads the latest
one back through `latest_checkpoint()` when it starts. It holds:

- `dcp/`: the model's and the optimizer's state, sharded with torch.distributed.checkpoint
  (`raysweep.model.checkpoint.save_training`): `.metadata` and one `__<rank>_0.distcp` per rank;
- `rank<r>.pt` (one per rank, `torch.save` of plain values): where the trial is (`at`: stage
  index, kind and key, target-task index, step), the trial's `Progress` and backbone source, the
  spend at the start of the stage and of the task, the trainer's step, token count, open log
  window, LR schedule and task sampler, every data stream's generator and pending order, this
  rank's torch RNG state, and (rank 0, which writes the metrics) the rows not yet flushed and
  how often each label was flushed.

In a Train job every rank writes its own directory (its shard and its `rank<r>.pt`; rank 0 also
`.metadata`) under one deterministic name (`checkpoint_dir_name`), and Ray Train merges them; a
trial run in-process (one rank) writes the whole directory itself. Resuming needs the world
size the checkpoint was written with (each rank reads its own file). A checkpoint is taken after
a step's log and, at an evaluation step, after the evaluation, so that a resumed run writes
each row exactly once: rows before the checkpoint come back from it (stamped with the current
attempt, so that they are not dropped as an older attempt's), rows after it are written again.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from raysweep.model.checkpoint import load_training, save_training
from raysweep.run.failures import kill_injected

if TYPE_CHECKING:
    from raysweep.run.runner import TrialRunner
    from raysweep.train.loop import Trainer
    from raysweep.train.stream import FeatureStream

DCP_DIR = "dcp"


def state_file(rank: int) -> str:
    return f"rank{rank}.pt"


def checkpoint_name(stage: int, task: int, step: int) -> str:
    """The checkpoint's directory name: the same on every rank and in every attempt, so that a
    rerun that checkpoints the same step again replaces it rather than adding one."""
    return f"ckpt-s{stage}-t{task}-{step:07d}"


class Checkpoints:
    """A trial's mid-stage checkpoints: `save` writes one and reports it, `resume_*` read the
    latest one back (see the module docstring for what a checkpoint holds)."""

    def __init__(self, runner: "TrialRunner", every: int,
                 latest: Callable[[], Path | None] | None):
        self.r, self.every = runner, every
        self.dir = latest() if latest is not None else None
        self.state: dict[str, Any] | None = None
        if self.dir is not None:
            path = Path(self.dir) / state_file(runner.ranks.rank)
            self.state = torch.load(path, weights_only=False)
            if self.state["world"] != runner.ranks.world:
                raise RuntimeError(f"{self.dir}: a checkpoint of {self.state['world']} ranks "
                                   f"cannot resume a trial of {runner.ranks.world}")

    # --- resuming -----------------------------------------------------------------------------

    def resume_trial(self) -> tuple[int, tuple[int, float] | None]:
        """Put the trial where the checkpoint was; the index of the stage to start at, and that
        stage's spend at its start (None: no checkpoint, start at the first stage)."""
        if self.state is None:
            return 0, None
        s, r = self.state, self.r
        r.progress = type(r.progress)(**s["progress"])
        r.source = s["source"]
        return s["at"]["stage"], tuple(s["stage_spend0"])

    def resume_task(self) -> int:
        """The first target task (index) to run in the runner's stage: the checkpoint's, if it
        was taken in this stage, else 0."""
        return self.state["at"]["task"] if self._in_stage() else 0

    def resume(self, task: int, model, trainer: "Trainer",
               streams: dict[str, "FeatureStream"]) -> tuple[int, float] | None:
        """Load the checkpoint into a freshly built model, trainer and streams if it was taken
        in this stage and task; the spend at the task's start, else None (start afresh). The
        checkpoint's unflushed rows are this task's: they come back only here, so a stage that
        another trial finished meanwhile leaves ours out."""
        if not (self._in_stage() and self.state["at"]["task"] == task):
            return None
        s = self.state
        load_training(Path(self.dir) / DCP_DIR, model, trainer.opt)
        trainer.load_state_dict(s["trainer"])
        for name, stream in streams.items():
            stream.load_state_dict(s["streams"][name])
        torch.set_rng_state(s["rng"])
        self.r.writer.restore(s["writer"])
        self.state = None  # used: a later stage of this run starts afresh
        return tuple(s["task_spend0"])

    def _in_stage(self) -> bool:
        """Whether the checkpoint was taken in the stage the runner is in."""
        return self.state is not None and self.state["at"]["stage"] == self.r.stage_index

    # --- saving -------------------------------------------------------------------------------

    def hook(self, stage, task: int, model, streams: dict[str, "FeatureStream"],
             task_spend0: tuple[int, float]):
        """`Trainer.run`'s `on_step` (and what the caller calls itself after an evaluation):
        checkpoint when the step is a multiple of `every`."""
        def on_step(trainer: "Trainer") -> None:
            if self.every and trainer.step % self.every == 0:
                self.save({"stage": self.r.stage_index, "kind": stage.kind, "key": stage.key,
                           "task": task, "step": trainer.step}, model, trainer, streams,
                          task_spend0)
            kill_injected(self.r, stage.kind, trainer.step)  # (a fault test's dead worker)
        return on_step

    def save(self, at: dict[str, Any], model, trainer: "Trainer",
             streams: dict[str, "FeatureStream"], task_spend0: tuple[int, float]) -> None:
        """Write a checkpoint in a private directory, report it, then delete it (Ray has copied
        it to the run's storage by the time `report` returns). A collective."""
        r = self.r
        name = checkpoint_name(at["stage"], at["task"], at["step"])
        tmp = Path(tempfile.mkdtemp(prefix="raysweep-ckpt-"))
        try:
            out = tmp / name
            save_training(out / DCP_DIR, model, trainer.opt)
            torch.save({
                "at": at, "world": r.ranks.world, "progress": dataclasses.asdict(r.progress),
                "source": None if r.source is None else str(r.source),
                "stage_spend0": r.stage_spend0, "task_spend0": task_spend0,
                "trainer": trainer.state_dict(),
                "streams": {k: s.state_dict() for k, s in streams.items()},
                "rng": torch.get_rng_state(), "writer": r.writer.state()},
               out / state_file(r.ranks.rank))
            objective = r.objective()
            r.report({"objective": math.nan if objective is None else objective,
                      "stage": at["kind"], "step": at["step"], "checkpoint": name},
                     checkpoint=out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
