"""The training and evaluation loops that every stage uses, in one process or as one rank of an
FSDP2 job. Nothing here knows about Ray: `raysweep.run.runner` calls these from Train workers, and
tests and benchmarks call them in a plain process.

Data parallelism: every step draws one *global* batch (the same on every rank, from a seeded
stream) and each rank takes its contiguous slice. With a per-example mean loss per rank and
FSDP2's averaging reduce-scatter, the gradient equals the single-process one on the same
global batch, which is what makes 2-worker and 1-process loss curves agree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from raysweep.train.mixing import SAMPLERS
from raysweep.tasks.base import Split
from raysweep.tasks.heads import Feature, Head


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> "Ranks":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.world == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


class FeatureStream:
    """An endless, seeded, epoch-shuffled stream of one task's features. `next()` returns this
    rank's slice of the next global batch."""

    def __init__(self, features: list[Feature], global_batch: int, seed: int, ranks: Ranks):
        if global_batch % ranks.world:
            raise ValueError(f"global batch {global_batch} must divide by {ranks.world} workers")
        if not features:
            raise ValueError("a training stream needs at least one feature")
        self.features = features
        self.global_batch = global_batch
        self.ranks = ranks
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []

    def next(self) -> list[Feature]:
        while len(self.order) < self.global_batch:
            self.order += self.rng.permutation(len(self.features)).tolist()
        batch, self.order = self.order[: self.global_batch], self.order[self.global_batch :]
        per_rank = self.global_batch // self.ranks.world
        mine = batch[self.ranks.rank * per_rank : (self.ranks.rank + 1) * per_rank]
        return [self.features[i] for i in mine]


@dataclass(frozen=True)
class Optim:
    lr: float
    steps: int
    warmup_frac: float = 0.1
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
    evaluations between them) under one learning-rate schedule."""

    def __init__(self, model: torch.nn.Module, heads: dict[str, type[Head]], optim: Optim,
                 pad_id: int, seed: int, sampler: str = "proportional",
                 weights: dict[str, float] | None = None, sizes: dict[str, int] | None = None):
        self.model, self.heads, self.optim, self.pad_id = model, heads, optim, pad_id
        self.ranks = Ranks.current()
        self.pick = SAMPLERS[sampler](sizes or {t: 1 for t in heads}, weights or {}, seed)
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
            batch = self.heads[task].collate(streams[task].next(), self.pad_id)
            loss = heads_loss(self.model, task, batch)
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
          heads: dict[str, type[Head]], optim: Optim, pad_id: int, seed: int,
          sampler: str = "proportional", weights: dict[str, float] | None = None,
          log_every: int = 10, on_log: Callable[[StepLog], None] | None = None) -> list[StepLog]:
    """Train `model` for `optim.steps` steps over a mixture of task streams."""
    sizes = {name: len(s.features) for name, s in streams.items()}
    trainer = Trainer(model, heads, optim, pad_id, seed, sampler, weights, sizes)
    return trainer.run(streams, optim.steps, log_every, on_log)


def heads_loss(model: torch.nn.Module, task: str, batch: dict[str, Tensor]) -> Tensor:
    """The task's loss on a batch; `model` is a TaskModel (possibly FSDP2-wrapped)."""
    return model.heads[task].loss(model(task, batch), batch)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    task: str,
    head: type[Head],
    split: Split,
    tokenizer,
    batch_size: int,
    max_length: int,
) -> list[Any]:
    """Predictions for every example of `split`, on every rank.

    Each rank runs its share of the features; every rank runs the same number of forward passes
    (FSDP2 all-gathers parameters in each one), padding with a repeated batch where its share
    runs out. Logits come back to all ranks, one tensor per feature, in feature order."""
    ranks = Ranks.current()
    features = head.encode(split, tokenizer, max_length)
    mine = list(range(ranks.rank, len(features), ranks.world))
    n_batches = math.ceil(math.ceil(len(features) / ranks.world) / batch_size)
    model.eval()
    local: list[tuple[int, Tensor]] = []
    for b in range(n_batches):
        idx = mine[b * batch_size : (b + 1) * batch_size]
        chunk = [features[i] for i in (idx or mine[:1] or [0])]
        logits = model(task, head.collate(chunk, tokenizer.pad_token_id))
        for j, i in enumerate(idx):
            local.append((i, logits[j : j + 1].float().cpu()))
    model.train()
    pairs = sorted((p for part in ranks.gather(local) for p in part), key=lambda p: p[0])
    return head.predict(split, features, [t for _, t in pairs])
