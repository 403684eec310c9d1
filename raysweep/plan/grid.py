"""The trials of a space, per model size (a grid's points, or how many Optuna draws), and the
finite sets that stage-aware search draws upstream values from.

- `loguniform: [lo, hi]` with `grid: k` is k log-spaced points (`log_grid`): trials that draw
  the same point share the upstream stage's key.
- A searched mixture (`mixtures.<name>.simplex`) is drawn as one uniform number u_i in [0, 1)
  per task (what the searcher sees, under `SIMPLEX`), mapped to the simplex by normalized
  exponentials, x_i = -log(1 - u_i), w = x / sum(x): with independent uniform u that is the flat
  Dirichlet(1, ..., 1), so random start-up trials cover the simplex evenly and any task can come
  near 0 or 1. (A softmax over bounded logits cannot reach the corners and crowds the centre.)
  The weights are then rounded to the grid by largest remainder (`round_to_grid`): whole units
  of the grid that sum to exactly 1, so near-identical mixtures get one stage key.

`trial_params` turns what the searcher hands a trial into the trial's hyperparameters; the plan
(`raysweep.plan.build`) calls it, so the driver and the workers resolve a config alike.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from raysweep.spec import NO_MIXTURE, SweepSpec
from raysweep.spec.space import ParamSpec

SIMPLEX = "simplex"  # config key: {mixture: {task: u in [0, 1)}}
MIXTURE_WEIGHTS = "mixture_weights"  # trial parameter: {task: rounded weight}
SIG_DIGITS = 4  # log-grid points are rounded to this many significant digits (readable keys)


def log_grid(lo: float, hi: float, k: int) -> list[float]:
    """k log-spaced points from lo to hi, both ends included."""
    return [float(f"{x:.{SIG_DIGITS}g}") for x in np.geomspace(lo, hi, k)]


def finite_values(p: ParamSpec) -> list[Any] | None:
    """The finite set a parameter draws from, or None for a continuous range."""
    if p.values is not None:
        return list(p.values)
    if p.grid is not None:
        return log_grid(*p.loguniform, p.grid)
    return None


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The trials of a grid search (one repeat), in order."""
    keys = list(spec.search.params)
    values = [finite_values(spec.search.params[k]) for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def trials_per_size(spec: SweepSpec) -> int:
    if spec.search.algorithm == "grid":
        return len(grid_points(spec)) * spec.search.num_samples
    return spec.search.num_samples


def simplex_centre() -> float:
    """The draw u that maps to x = 1 (every task at it: equal weights)."""
    return 1 - math.exp(-1)


def simplex_point(u: dict[str, float]) -> dict[str, float]:
    """Uniform numbers in [0, 1) per task -> a point of the simplex (normalized exponentials)."""
    x = {t: -math.log1p(-min(float(v), 1 - 1e-12)) for t, v in u.items()}
    total = sum(x.values())
    if total <= 0:  # every u exactly 0: no direction at all, so the centre
        return {t: 1 / len(x) for t in x}
    return {t: v / total for t, v in x.items()}


def round_to_grid(w: dict[str, float], units: int) -> dict[str, float]:
    """Weights -> multiples of 1/units that sum to exactly `units` units (largest remainder:
    floor each, then one more unit to the largest remainders; ties by task name). Tasks at 0
    are dropped: a mixture without them is the same mixture, with the same key."""
    total = sum(w.values())
    scaled = {t: v / total * units for t, v in sorted(w.items())}
    whole = {t: math.floor(v) for t, v in scaled.items()}
    left = units - sum(whole.values())
    for t in sorted(scaled, key=lambda t: (whole[t] - scaled[t], t))[:left]:
        whole[t] += 1
    return {t: round(n / units, 12) for t, n in whole.items() if n > 0}


def trial_params(spec: SweepSpec, config: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters from its searcher config: a searched mixture's draws become
    its rounded weights (`MIXTURE_WEIGHTS`). Idempotent (a resolved config comes back as is)."""
    params = {k: v for k, v in config.items() if k != SIMPLEX}
    mix = spec.mixtures.get(params.get("mixture", NO_MIXTURE))
    if mix is not None and mix.simplex is not None and MIXTURE_WEIGHTS not in params:
        u = (config.get(SIMPLEX) or {}).get(params.get("mixture", NO_MIXTURE))
        if u is None:  # no draw (a hand-written config): the candidates' equal weights
            u = {t: simplex_centre() for t in mix.tasks}
        params[MIXTURE_WEIGHTS] = round_to_grid(simplex_point(u), mix.simplex.units)
    return params
