"""Multi-task samplers: which task the next batch comes from. One class per mixing strategy, as
in jiant. Every rank builds the same sampler with the same seed, so all ranks pick the same task
at every step (FSDP needs every rank to run the same head)."""

from __future__ import annotations

import numpy as np


class TaskSampler:
    def __init__(self, sizes: dict[str, int], weights: dict[str, float], seed: int):
        self.names = list(sizes)
        self.rng = np.random.default_rng(seed)
        p = np.array([self._weight(sizes[n], weights.get(n, 1.0)) for n in self.names], float)
        self.p = p / p.sum()

    def _weight(self, size: int, weight: float) -> float:
        raise NotImplementedError

    def __call__(self) -> str:
        return self.names[int(self.rng.choice(len(self.names), p=self.p))]


class ProportionalSampler(TaskSampler):
    """Tasks drawn in proportion to their size times their weight."""

    def _weight(self, size: int, weight: float) -> float:
        return size * weight


class UniformSampler(TaskSampler):
    """Every task equally often, scaled by its weight."""

    def _weight(self, size: int, weight: float) -> float:
        return weight


class TemperatureSampler(TaskSampler):
    """Size ** (1/T): T=1 is proportional, large T tends to uniform (as in mT5/XLM-R)."""

    def __init__(self, sizes, weights, seed, temperature: float = 2.0):
        self.temperature = temperature
        super().__init__(sizes, weights, seed)

    def _weight(self, size: int, weight: float) -> float:
        return weight * size ** (1.0 / self.temperature)


SAMPLERS: dict[str, type[TaskSampler]] = {
    "proportional": ProportionalSampler,
    "uniform": UniformSampler,
    "temperature": TemperatureSampler,
}
