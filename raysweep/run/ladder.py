"""Ladder-informed search (`search.ladder: true`): sizes run smallest first, and once a size is
done its best learning rates inform the next size's search.

Before each size after the first, for every searched learning rate, the best trial's lr of each
finished size (the one best-trial rule, `raysweep.results.best`) is fitted as a power law in the
parameter count, lr*(N) = a * N^b (least squares in log-log; one finished size: b = 0, the same
lr), and extrapolated to the next size. Then:

- a `loguniform` range becomes [lr*/NARROW, lr* x NARROW], clipped to the space's range;
- a finite set (`values`, or `loguniform` with `grid`) keeps the points inside that window (at
  least the one nearest lr*, in log space), so a grid's points and their shared keys stay;
- Optuna evaluates the predicted point first (`points_to_evaluate`).

What was predicted and what the size's search then found go to `<sweep>/ladder.json`, and are
printed. The fit is a few lines of numpy here, not `raysweep.analysis.scaling` (whose forms fit
losses with offsets and bootstraps, and which `run` may not import: tests/test_layout.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rich.console import Console

from raysweep.plan.build import n_params
from raysweep.plan.grid import SIMPLEX, finite_values, simplex_centre
from raysweep.results.best import pick_best
from raysweep.results.tables import Location, load, put_bytes
from raysweep.spec.space import ModelSpec, ParamSpec, SweepSpec

LADDER_FILE = "ladder.json"
NARROW = 3.0  # the next size's lr window: the prediction x/÷ this factor


@dataclass(frozen=True)
class PowerLaw:
    """lr = a * N^b."""

    a: float
    b: float

    def __call__(self, n: float) -> float:
        return self.a * n ** self.b


def fit_lr(points: list[tuple[float, float]]) -> PowerLaw:
    """Fit lr*(N) to (n_params, best lr) of the finished sizes."""
    if not points:
        raise ValueError("no finished size to fit")
    ns = np.log([n for n, _ in points])
    lrs = np.log([lr for _, lr in points])
    if len(set(ns.tolist())) < 2:  # one size: no slope to see, so the same lr
        return PowerLaw(float(np.exp(lrs.mean())), 0.0)
    b, log_a = np.polyfit(ns, lrs, 1)
    return PowerLaw(float(np.exp(log_a)), float(b))


def narrowed(p: ParamSpec, predicted: float, factor: float = NARROW) -> tuple[ParamSpec, float]:
    """The next size's ParamSpec around `predicted`, and the point to evaluate first (inside it)."""
    values = finite_values(p)
    if values is None:
        lo, hi = p.loguniform
        center = min(max(predicted, lo), hi)
        window = (max(lo, center / factor), min(hi, center * factor))
        return ParamSpec(loguniform=window), center
    nearest = min(values, key=lambda v: abs(math.log(v / predicted)))
    inside = [v for v in values if predicted / factor <= v <= predicted * factor] or [nearest]
    return ParamSpec(values=inside), nearest


@dataclass
class Rung:
    """One size's line in ladder.json."""

    model: str
    n_params: int
    predicted: dict[str, float]  # param -> lr*(N) from the smaller sizes
    searched: dict[str, Any]  # param -> the range or values the size searched
    found: dict[str, float] | None = None  # param -> the best trial's lr, once the size is done


def best_lrs(rows: list[dict], model: str, params: list[str], mode: str) -> dict[str, float]:
    """The best finished trial's learning rates at one size (the one best-trial rule)."""
    best = pick_best([r for r in rows if r["model"] == model], ("model",), mode=mode)
    if not best:
        return {}
    return {p: best[0][p] for p in params if best[0].get(p) is not None}


def plan_rung(params: dict[str, ParamSpec], finished: list[tuple[int, dict[str, float]]],
              model: str, n: int) -> tuple[Rung, dict[str, ParamSpec], dict[str, float]]:
    """From the finished sizes' (n_params, {param: best lr}): the next size's rung, its
    narrowed params and the point Optuna evaluates first. Params no finished size has a best
    value for stay as they are."""
    rung, space, first = Rung(model, n, {}, {}), {}, {}
    for key, p in params.items():
        seen = [(fn, lrs[key]) for fn, lrs in finished if key in lrs]
        if not key.startswith("lr_") or not seen:
            continue
        pred = fit_lr(seen)(n)
        space[key], first[key] = narrowed(p, pred)
        rung.predicted[key] = pred
        rung.searched[key] = space[key].model_dump(exclude_none=True)
    return rung, space, first


def full_point(spec: SweepSpec, params: dict[str, ParamSpec],
               first: dict[str, float]) -> dict[str, Any]:
    """A whole point for Optuna's `points_to_evaluate` (Tune wants every dimension, by its
    flattened name): the predictions, the first of each finite set, the geometric middle of each
    other range, and the centre of each searched mixture."""
    point: dict[str, Any] = {}
    for key, p in params.items():
        values = finite_values(p)
        point[key] = first.get(key, values[0] if values else math.sqrt(math.prod(p.loguniform)))
    for mname, mix in spec.mixtures.items():
        if mix.simplex is not None:
            point.update({f"{SIMPLEX}/{mname}/{t}": simplex_centre() for t in mix.tasks})
    return point


def write_ladder(rungs: list[Rung]) -> bytes:
    return json.dumps({"narrow": NARROW, "sizes": [asdict(r) for r in rungs]}, indent=1).encode()


def describe(rung: Rung) -> str:
    """One printed line per size: the prediction, and (when done) what was found beside it."""
    parts = []
    for key in dict.fromkeys([*rung.predicted, *(rung.found or {})]):
        pred, found = rung.predicted.get(key), (rung.found or {}).get(key)
        said = [f"{what} {v:.3g}" for what, v in (("predicted", pred), ("found", found))
                if v is not None]
        parts.append(f"{key}: " + ", ".join(said))
    return f"ladder {rung.model}: " + ("; ".join(parts) or "nothing to predict yet")


class Ladder:
    """The ladder of one launch: `before(m)` gives a size's search params and the points Optuna
    evaluates first; `after(m)` records what the size found. Off (`search.ladder: false`): the
    space's params, no points, nothing written."""

    def __init__(self, spec: SweepSpec, sweep_dir: Location, console: Console):
        self.spec, self.sweep_dir, self.console = spec, sweep_dir, console
        self.rungs: list[Rung] = []

    def before(self, m: ModelSpec) -> tuple[dict[str, ParamSpec], list[dict[str, float]]]:
        params = dict(self.spec.search.params)
        if not self.spec.search.ladder:
            return params, []
        finished = [(r.n_params, r.found) for r in self.rungs if r.found]
        rung, space, first = plan_rung(params, finished, m.name, n_params(self.spec, m))
        self.rungs.append(rung)
        if rung.predicted:
            self.console.print(describe(rung))
        put_bytes(self.sweep_dir / LADDER_FILE, write_ladder(self.rungs))
        params.update(space)
        return params, [full_point(self.spec, params, first)] if first else []

    def after(self, m: ModelSpec) -> None:
        if not self.spec.search.ladder:
            return
        keys = [k for k in self.spec.search.params if k.startswith("lr_")]
        rows = load(self.sweep_dir, "trials").to_pylist()
        self.rungs[-1].found = best_lrs(rows, m.name, keys, self.spec.search.mode)
        self.console.print(describe(self.rungs[-1]))
        put_bytes(self.sweep_dir / LADDER_FILE, write_ladder(self.rungs))
