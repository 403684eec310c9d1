"""Evaluation: predictions for every example of a split, in one process or across the ranks of
an FSDP2 job (every rank gets all of them)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.distributed.fsdp import FSDPModule

from raysweep.tasks.base import Split
from raysweep.tasks.encoding import Encoder
from raysweep.train.ranks import Ranks


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    task: str,
    encoder: type[Encoder],
    split: Split,
    tokenizer,
    batch_size: int,
    max_length: int,
) -> list[Any]:
    """Predictions for every example of `split`, on every rank; `model` is a TaskModel
    (possibly FSDP2-wrapped) holding a head for `task`.

    Rank r runs features r, r + world, ...; every rank runs the same number of forward passes
    (FSDP2 all-gathers parameters in each one), padding with a repeated batch where its share
    runs out. The logits come back to all ranks, one tensor per feature, put back in feature
    order (by feature index) before `encoder.predict` pairs them with the features."""
    ranks = Ranks.current()
    features = encoder.encode(split, tokenizer, max_length)
    mine = list(range(ranks.rank, len(features), ranks.world))
    n_batches = math.ceil(math.ceil(len(features) / ranks.world) / batch_size)
    model.eval()
    device = next(model.parameters()).device  # batches go where the (local) weights are
    local: list[tuple[int, Tensor]] = []
    for b in range(n_batches):
        idx = mine[b * batch_size : (b + 1) * batch_size]
        chunk = [features[i] for i in (idx or mine[:1] or [0])]
        batch = encoder.collate(chunk, tokenizer.pad_token_id)
        if device.type != "cpu":
            batch = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
                     for k, v in batch.items()}
        logits = model(task, batch)
        for j, i in enumerate(idx):
            local.append((i, logits[j : j + 1].float().cpu()))
    model.train()
    # FSDP2 keeps a layer sharded with reshard_after_forward=False (all of them on CPU, the last
    # one everywhere) gathered after its forward until backward reshards it. An evaluation has
    # no backward: left gathered, the layer would train on from that stale copy and ignore the
    # optimizer's updates to its shards. So every FSDP2 module is resharded here.
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    pairs = sorted((p for part in ranks.gather(local) for p in part), key=lambda p: p[0])
    return encoder.predict(split, features, [t for _, t in pairs])
