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

    def __init__(self, features: list[Feature], global_batch: int, seed: int, ranks: Ranks,
                 micro_batch_size: int | None = None):
        if global_batch % ranks.world:
            raise ValueError(f"global batch {global_batch} must divide by {ranks.world} workers")
        per_rank = global_batch // ranks.world
        if micro_batch_size is not None and (micro_batch_size <= 0 or per_rank % micro_batch_size):
            raise ValueError(f"micro batch {micro_batch_size} must divide the per-rank batch "
                             f"{per_rank} (global {global_batch} over {ranks.world} workers)")
        if not features:
            raise ValueError("a training stream needs at least one feature")
        self.features = features
        self.global_batch = global_batch
        self.ranks = ranks
        self.micro_batch_size = micro_batch_size
        self.rng = np.random.default_rng(seed)
        self.order: list[int] = []

    def next(self) -> list[Feature]:
        while len(self.order) < self.global_batch:
            self.order += self.rng.permutation(len(self.features)).tolist()
        batch, self.order = self.order[: self.global_batch], self.order[self.global_batch :]
        per_rank = self.global_batch // self.ranks.world
        mine = batch[self.ranks.rank * per_rank : (self.ranks.rank + 1) * per_rank]
        return [self.features[i] for i in mine]

    def next_micro(self) -> list[list[Feature]]:
        """This rank's slice of the next global batch, as its micro batches (in order)."""
        mine = self.next()
        size = self.micro_batch_size or len(mine)
        return [mine[i : i + size] for i in range(0, len(mine), size)]

    def state_dict(self) -> dict:
        """The stream's position: its generator's state and what is left of the current
        epoch's order (the same on every rank: the stream is global)."""
        return {"rng": self.rng.bit_generator.state, "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.order = list(state["order"])
