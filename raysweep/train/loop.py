"""The training loop that every stage uses, in one process or as one rank of an FSDP2 job.
Nothing here knows about Ray: `raysweep.run` calls it from Train workers, and tests and
benchmarks call it in a plain process. Data parallelism is in the data (`FeatureStream`: each rank
takes its slice of one global batch) and in FSDP2's gradient averaging.

Gradient accumulation: a stream with a `micro_batch_size` splits its rank's slice into micro
batches; each one's forward and backward run in turn and the optimizer steps once. The loss
being minimized is unchanged: each micro batch's mean loss is weighted by its share of the
rank batch's loss units (`loss_units`: examples, or for token-level losses the tokens that
carry a label), so the summed gradient is the gradient of the whole rank batch's mean. (A plain
1/steps weighting would be exact only for per-example losses: micro batches hold different
numbers of labelled tokens.) Two heads stay split-dependent, as they already are across ranks:
retrieval's in-batch negatives are those of the micro batch, and span QA's softmax runs over
each micro batch's own padding. Under FSDP2 the gradient reduce-scatter runs only after the
last micro batch (`set_requires_gradient_sync`), gradients accumulating unsharded until then."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.distributed.fsdp import FSDPModule

from raysweep.tasks.encoding import Encoder
from raysweep.train.errors import NonFiniteLoss
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
    # Frozen parameters (a LoRA base) get no optimizer state; with every parameter trainable
    # this is `model.parameters()`, in the same order.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay,
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
        self.device = next(model.parameters()).device  # batches go where the (local) weights are
        self.step = 0
        self.tokens = 0  # all ranks, logged steps only (an all-reduce per log, not per step)
        # This rank's loss sum, steps and tokens since the last log: a checkpoint between two
        # logs must carry them, or the resumed log would average over fewer steps.
        self.window: tuple[float, int, int] = (0.0, 0, 0)

    def run(self, streams: dict[str, FeatureStream], steps: int, log_every: int = 10,
            on_log: Callable[[StepLog], None] | None = None,
            on_step: Callable[["Trainer"], None] | None = None) -> list[StepLog]:
        """Take `steps` more optimizer steps. Losses are logged every `log_every` steps as the
        mean over those steps and all ranks. `on_step(self)` runs after every step but the
        last of this call (a mid-stage checkpoint; the caller acts after the last one itself,
        e.g. once its evaluation at that step is done)."""
        self.model.train()
        logs: list[StepLog] = []
        loss_sum, n, tokens_local = self.window
        start = time.perf_counter()
        stop = min(self.step + steps, self.optim.steps)
        while self.step < stop:
            self.step += 1
            task = self.pick()
            loss, tokens = self._forward_backward(task, streams[task])
            NonFiniteLoss.check(loss, task, self.step)  # before the step spoils the weights
            if self.optim.clip:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.model.parameters() if p.requires_grad], self.optim.clip)
            self.opt.step()
            self.sched.step()
            self.opt.zero_grad(set_to_none=True)
            loss_sum += loss
            n += 1
            tokens_local += tokens
            if self.step % log_every == 0 or self.step == stop:
                total_loss, total_tokens = self.ranks.sum([loss_sum, float(tokens_local)])
                self.tokens += int(total_tokens)
                log = StepLog(self.step, total_loss / (n * self.ranks.world), self.tokens,
                              time.perf_counter() - start, task)
                logs.append(log)
                if on_log:
                    on_log(log)
                loss_sum, n, tokens_local = 0.0, 0, 0
            self.window = (loss_sum, n, tokens_local)
            if on_step and self.step < stop:
                on_step(self)
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Everything of this trainer's progress but the model's and optimizer's tensors (which
        a checkpoint stores sharded): step, token count, the open log window, the schedule and
        the task sampler's position. Plain Python values."""
        return {"step": self.step, "tokens": self.tokens, "window": self.window,
                "sched": self.sched.state_dict(),
                # the task sampler (raysweep.train.mixing): its generator, and the step of a
                # strategy that depends on it (`linear`)
                "sampler": {"rng": self.pick.rng.bit_generator.state,
                            "t": getattr(self.pick, "t", None)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.tokens = state["step"], state["tokens"]
        self.window = tuple(state["window"])
        self.sched.load_state_dict(state["sched"])
        self.pick.rng.bit_generator.state = state["sampler"]["rng"]
        if state["sampler"]["t"] is not None:
            self.pick.t = state["sampler"]["t"]

    def _forward_backward(self, task: str, stream: FeatureStream) -> tuple[float, int]:
        """Forward and backward over this rank's share of one global batch; returns its mean
        loss and its token count. Without micro batches this is one forward and backward."""
        encoder = self.encoders[task]
        batches = [encoder.collate(m, self.pad_id) for m in stream.next_micro()]
        # Counted on the host, before the batches move: no device sync.
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        units = [loss_units(encoder.kind, b) for b in batches] if len(batches) > 1 else [1]
        if self.device.type != "cpu":
            batches = [{k: v.to(self.device, non_blocking=True) for k, v in b.items()}
                       for b in batches]
        if len(batches) == 1:
            loss = task_loss(self.model, task, batches[0])
            loss.backward()
            return loss.item(), tokens
        total, fsdp, parts = sum(units), isinstance(self.model, FSDPModule), []
        for i, (batch, u) in enumerate(zip(batches, units)):
            if fsdp:  # reduce-scatter once, after the last micro batch
                self.model.set_requires_gradient_sync(i == len(batches) - 1)
            loss = task_loss(self.model, task, batch) * (u / total)
            loss.backward()
            parts.append(loss.detach())
        return sum(x.item() for x in parts), tokens  # read after the last backward: one sync


def loss_units(kind: str, batch: dict[str, Tensor]) -> int:
    """How many terms a head's mean loss averages over in `batch` (see the module docstring):
    labelled tokens for the token-level heads (tagging: first sub-tokens; causal LM: every
    non-pad token after the first), examples for the others."""
    if kind == "token_cls":
        return int((batch["labels"] != -100).sum())
    if kind == "causal_lm":
        return int(batch["attention_mask"][:, 1:].sum())
    return int(batch["input_ids"].shape[0])


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
