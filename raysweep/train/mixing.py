"""Multi-task samplers: which task the next batch comes from. One class per mixing strategy, as
in jiant (uniform, proportional, temperature with an example cap, specified, time-dependent).
Every rank builds the same sampler with the same seed, so all ranks pick the same task at every
step (FSDP needs every rank to run the same head).

A sampler is called once per optimizer step. Its probabilities are p_i ∝ w_i · b_i, where w_i
is the mixture's own weight for task i (1.0 when not given) and b_i the strategy's base:

    uniform        b_i = 1
    proportional   b_i = n_i                          (n_i: the task's training examples)
    temperature    b_i = min(n_i, cap) ** (1/T)       (cap: none by default; T=1 is proportional)
    specified      b_i = s_i                          (the strategy's own weights)
    linear         b_i(t) = (1 - f) a_i + f e_i,  f = t / (steps - 1)   (a: start, e: end)

`SAMPLERS[spec]` takes a stage config's `sampler` value, a name or {name: {params}}
(`raysweep.spec.mixtures`), and gives a constructor `(sizes, weights, seed) -> TaskSampler`.
"""

from __future__ import annotations

import functools

import numpy as np


class TaskSampler:
    def __init__(self, sizes: dict[str, int], weights: dict[str, float], seed: int):
        self.names = list(sizes)
        self.sizes, self.weights = sizes, weights
        self.rng = np.random.default_rng(seed)
        self.p = self._normalized([self._weight(n, sizes[n], weights.get(n, 1.0))
                                   for n in self.names])

    @staticmethod
    def _normalized(p) -> np.ndarray:
        p = np.array(p, float)
        return p / p.sum()

    def _weight(self, task: str, size: int, weight: float) -> float:
        raise NotImplementedError

    def probabilities(self) -> np.ndarray:
        """The next draw's probabilities (fixed, unless the strategy depends on the step)."""
        return self.p

    def __call__(self) -> str:
        return self.names[int(self.rng.choice(len(self.names), p=self.probabilities()))]


class ProportionalSampler(TaskSampler):
    """Tasks drawn in proportion to their size times their weight."""

    def _weight(self, task: str, size: int, weight: float) -> float:
        return size * weight


class UniformSampler(TaskSampler):
    """Every task equally often, scaled by its weight."""

    def _weight(self, task: str, size: int, weight: float) -> float:
        return weight


class TemperatureSampler(TaskSampler):
    """min(size, cap) ** (1/T): T=1 is proportional, large T tends to uniform (as in mT5/XLM-R);
    the cap keeps one huge task from counting for more than `cap` examples (jiant)."""

    def __init__(self, sizes, weights, seed, T: float = 2.0, cap: int | None = None):
        self.temperature, self.cap = T, cap
        super().__init__(sizes, weights, seed)

    def _weight(self, task: str, size: int, weight: float) -> float:
        n = size if self.cap is None else min(size, self.cap)
        return weight * n ** (1.0 / self.temperature)


class SpecifiedSampler(TaskSampler):
    """The strategy's own weights, normalized (times the mixture's weights); sizes unused."""

    def __init__(self, sizes, weights, seed, specified: dict[str, float]):
        self.specified = specified
        super().__init__(sizes, weights, seed)

    def _weight(self, task: str, size: int, weight: float) -> float:
        return weight * self.specified.get(task, 0.0)


class LinearSampler(TaskSampler):
    """Time-dependent: from the `start` weights at the first step to the `end` weights at step
    `steps` (and after), linearly; each call is one step."""

    def __init__(self, sizes, weights, seed, start: dict[str, float], end: dict[str, float],
                 steps: int):
        self.start, self.end, self.steps, self.t = start, end, steps, 0
        super().__init__(sizes, weights, seed)

    def _weight(self, task: str, size: int, weight: float) -> float:
        return weight * self.start.get(task, 0.0)  # p at the first step (the base's `p`)

    def at(self, t: int) -> np.ndarray:
        f = min(1.0, t / max(1, self.steps - 1))
        return self._normalized([self.weights.get(n, 1.0) * ((1 - f) * self.start.get(n, 0.0)
                                                             + f * self.end.get(n, 0.0))
                                 for n in self.names])

    def probabilities(self) -> np.ndarray:
        return self.at(self.t)

    def __call__(self) -> str:
        task = super().__call__()
        self.t += 1
        return task


CLASSES: dict[str, type[TaskSampler]] = {
    "proportional": ProportionalSampler,
    "uniform": UniformSampler,
    "temperature": TemperatureSampler,
    "specified": SpecifiedSampler,
    "linear": LinearSampler,
}


class _Samplers(dict):
    """`SAMPLERS[name]` or `SAMPLERS[{name: params}]` -> a constructor (sizes, weights, seed)."""

    def __getitem__(self, spec):
        if isinstance(spec, str):
            return super().__getitem__(spec)
        (name, params), = spec.items()
        if name == "specified":  # `weights` would clash with the mixture's weights argument
            params = {"specified": params["weights"]}
        return functools.partial(super().__getitem__(name), **params)


SAMPLERS: dict[str, type[TaskSampler]] = _Samplers(CLASSES)
