"""The trials of a space, per model size: a grid's points, or how many Optuna draws."""

from __future__ import annotations

import itertools
from typing import Any

from raysweep.spec import SweepSpec


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The trials of a grid search (one repeat), in order."""
    keys = list(spec.search.params)
    values = [spec.search.params[k].values for k in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def trials_per_size(spec: SweepSpec) -> int:
    if spec.search.algorithm == "grid":
        return len(grid_points(spec)) * spec.search.num_samples
    return spec.search.num_samples
