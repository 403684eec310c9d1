"""Training data for the loop: every step draws one *global* batch (the same on every rank, from
a seeded stream) and each rank takes its contiguous slice. With a per-example mean loss per rank
and FSDP2's averaging reduce-scatter, the gradient equals the single-process one on the same
global batch, which is what makes 2-worker and 1-process loss curves agree."""

from __future__ import annotations

import numpy as np

from raysweep.tasks.encoding import Feature
from raysweep.train.ranks import Ranks


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
