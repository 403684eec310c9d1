"""The training loop that every stage uses, in one process or as one rank of an FSDP2 job.
Nothing here knows about Ray: `raysweep.run` calls it from Train workers, and tests and
benchmarks call it in a plain process. Data parallelism is in the data (`FeatureStream`: each rank
takes its slice of one global batch) and in FSDP2's gradient averaging."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from raysweep.tasks.encoding import Encoder
from raysweep.train.mixing import SAMPLERS
from raysweep.train.ranks import Ranks
from raysweep.train.stream import FeatureStream


@dataclass(frozen=True)
class Optim:
    """AdamW with linear warm-up over `warmup_frac` of the steps, then linear decay to 10%.
    `warmup_frac` has no default here: its one default is the space's (`raysweep.spec`)."""

    lr: float
    steps: int
    warmup_frac: float
    weight_decay: float = 0.01
    clip: float = 1.0


def make_optimizer(model: torch.nn.Module, o: Optim):
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay,
                            foreach=True)
    warm = max(1, int(o.warmup_frac * o.steps))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 10%
        if step < warm:
            return (step + 1) / warm
        return max(0.1, 1.0 - 0.9 * (step - warm) / max(1, o.steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


@dataclass
class StepLog:
    step: int
    loss: float
    tokens: int  # tokens seen in this call so far, all ranks
    wall_s: float
    task: str


class Trainer:
    """Owns the optimizer and schedule of one model, so that training can run in chunks (with
    evaluations between them) under one learning-rate schedule. `encoders` maps each task the
    model has a head for to its encoder (which collates its batches)."""

    def __init__(self, model: torch.nn.Module, encoders: dict[str, type[Encoder]], optim: Optim,
                 pad_id: int, seed: int, sampler: str = "proportional",
                 weights: dict[str, float] | None = None, sizes: dict[str, int] | None = None):
        self.model, self.encoders, self.optim, self.pad_id = model, encoders, optim, pad_id
        self.ranks = Ranks.current()
        self.pick = SAMPLERS[sampler](sizes or {t: 1 for t in encoders}, weights or {}, seed)
        self.opt, self.sched = make_optimizer(model, optim)
        self.step = 0
        self.tokens = 0  # all ranks, logged steps only (an all-reduce per log, not per step)

    def run(self, streams: dict[str, FeatureStream], steps: int, log_every: int = 10,
            on_log: Callable[[StepLog], None] | None = None) -> list[StepLog]:
        """Take `steps` more optimizer steps. Losses are logged every `log_every` steps as the
        mean over those steps and all ranks."""
        self.model.train()
        logs: list[StepLog] = []
        loss_sum, n, tokens_local = 0.0, 0, 0
        start = time.perf_counter()
        stop = min(self.step + steps, self.optim.steps)
        while self.step < stop:
            self.step += 1
            task = self.pick()
            batch = self.encoders[task].collate(streams[task].next(), self.pad_id)
            loss = task_loss(self.model, task, batch)
            loss.backward()
            if self.optim.clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.optim.clip)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            n += 1
            tokens_local += int(batch["attention_mask"].sum())
            if self.step % log_every == 0 or self.step == stop:
                total_loss, total_tokens = self.ranks.sum([loss_sum, float(tokens_local)])
                self.tokens += int(total_tokens)
                log = StepLog(self.step, total_loss / (n * self.ranks.world), self.tokens,
                              time.perf_counter() - start, task)
                logs.append(log)
                if on_log:
                    on_log(log)
                loss_sum, n, tokens_local = 0.0, 0, 0
        return logs


def train(model: torch.nn.Module, streams: dict[str, FeatureStream],
          encoders: dict[str, type[Encoder]], optim: Optim, pad_id: int, seed: int,
          sampler: str = "proportional", weights: dict[str, float] | None = None,
          log_every: int = 10, on_log: Callable[[StepLog], None] | None = None) -> list[StepLog]:
    """Train `model` for `optim.steps` steps over a mixture of task streams."""
    sizes = {name: len(s.features) for name, s in streams.items()}
    trainer = Trainer(model, encoders, optim, pad_id, seed, sampler, weights, sizes)
    return trainer.run(streams, optim.steps, log_every, on_log)


def task_loss(model: torch.nn.Module, task: str, batch: dict[str, Tensor]) -> Tensor:
    """The task's loss on a batch; `model` is a TaskModel (possibly FSDP2-wrapped)."""
    return model.heads[task].loss(model(task, batch), batch)
