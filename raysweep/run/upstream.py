"""Upstream first (`search.share_stages: true`): a trial whose stored stage (pretrain or
intermediate) another running trial is training now is held back by the searcher, not started.

The stage store alone already trains a key once: a second trial that reaches a key under lease
waits for it (`raysweep.run.store`). But it waits inside its Train job, holding its workers' CPUs
or GPUs for the whole upstream stage, and a slot of `max_concurrent_trials`. Here the searcher
keeps such a config until the key is done (the store's STATUS, read on the driver) or its
trainer ends, and meanwhile lets configs with other upstream keys start, so the cluster trains
distinct upstream stages side by side and each one once. Nothing changes in what a trial
computes, only when it starts.

`Gate` is the rule (pure); `UpstreamFirst` wraps a Tune `Searcher` (Optuna) with it. Tune wraps
this in its `ConcurrencyLimiter`, which counts only the configs actually handed out.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from raysweep.plan.build import build_plan
from raysweep.run.store import StageStore
from raysweep.spec.space import ModelSpec, SweepSpec

Key = tuple[str, str]  # (stage kind, key)


class Gate:
    """Which configs may start: none whose upstream key a running trial is training."""

    def __init__(self, keys_of: Callable[[dict], tuple[Key, ...]], done: Callable[[Key], bool]):
        self.keys_of, self.done = keys_of, done
        self.running: dict[str, tuple[Key, ...]] = {}  # trial id -> its stored stages' keys

    def busy(self, config: dict) -> bool:
        """Another running trial holds one of this config's upstream keys, not yet done."""
        held = {k for keys in self.running.values() for k in keys}
        return any(k in held and not self.done(k) for k in self.keys_of(config))

    def start(self, trial_id: str, config: dict) -> None:
        self.running[trial_id] = self.keys_of(config)

    def finish(self, trial_id: str) -> None:
        self.running.pop(trial_id, None)


class UpstreamFirst(Searcher):
    """Holds back (up to `hold`) suggestions whose upstream stage is being trained; hands out the
    first held one that is free again before asking the inner searcher for more. A held config
    is handed to a later Tune trial id; results are reported to the inner searcher under the id
    it made the config for."""

    def __init__(self, searcher: Searcher, gate: Gate, hold: int):
        self.searcher, self.gate, self.hold = searcher, gate, hold
        self.held: list[tuple[str, dict]] = []  # (inner trial id, config)
        self.inner_id: dict[str, str] = {}  # Tune trial id -> the inner searcher's id
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        free = next((h for h in self.held if not self.gate.busy(h[1])), None)
        if free is not None:
            self.held.remove(free)
            return self._hand_out(trial_id, *free)
        if len(self.held) >= self.hold:
            return None  # Tune asks again on its next step
        config = self.searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        if self.gate.busy(config):
            self.held.append((trial_id, config))
            return None
        return self._hand_out(trial_id, trial_id, config)

    def _hand_out(self, trial_id: str, inner: str, config: dict) -> dict:
        self.inner_id[trial_id] = inner
        self.gate.start(trial_id, config)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(self.inner_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.gate.finish(trial_id)
        self.searcher.on_trial_complete(self.inner_id.pop(trial_id, trial_id), result=result,
                                        error=error)

    # Tune checkpoints a wrapper (anything with `.searcher`) by get_state/set_state and saves
    # the inner searcher itself; the gate's functions are rebuilt by `make_searcher`.
    def get_state(self) -> dict[str, Any]:
        return {"held": list(self.held), "inner_id": dict(self.inner_id),
                "running": dict(self.gate.running)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.held = [tuple(h) for h in state["held"]]
        self.inner_id = dict(state["inner_id"])
        self.gate.running = {t: tuple(map(tuple, keys)) for t, keys in state["running"].items()}


def make_searcher(spec: SweepSpec, m: ModelSpec, stages: Path, points: list[dict],
                  hold: int) -> Searcher | None:
    """The size's searcher: None for a grid; Optuna TPE (starting from `points`, the ladder's),
    wrapped in `UpstreamFirst` when the space shares stages."""
    if spec.search.algorithm != "optuna":
        return None
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(seed=spec.search.seed, points_to_evaluate=points or None)
    if not spec.search.share_stages:
        return searcher
    store = StageStore(stages)

    def keys_of(config: dict) -> tuple[Key, ...]:
        return tuple((s.kind, s.key) for s in build_plan(spec, m, config).stages if s.stored)

    return UpstreamFirst(searcher, Gate(keys_of, lambda k: store.is_done(*k)), hold)
