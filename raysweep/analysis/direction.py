"""Which way a metric moves with model size, and what each form is fitted to.

A scaling form describes one direction: the power law and Chinchilla's law fall with N towards
an irreducible E, the bounded form and the two-step sigmoid rise towards a ceiling. So before a
form is fitted the metric's direction is settled, in this order:

1. `--direction rising|falling`, where the user says so;
2. the metric's name: accuracy-like names rise (`points.higher_is_better`), losses fall;
3. otherwise (a table without a metric name, or a name not known here) the data's own trend:
   the mean over groups of Spearman's rho between size and each size's mean value. It decides
   only when |rho| >= MIN_TREND; a flatter trend is bad input, and the message says what to
   pass.

A rising quantity is fitted by the falling forms as its gap to the metric's ceiling,
ceiling - value = E + A N^-alpha, i.e. value = C - A N^-alpha with C = ceiling - E <= ceiling
(E >= 0 in the power law's search): the curve may saturate below the ceiling, never above it.
This rather than a free C: with the four or five sizes a model family has, a free asymptote is
barely identified and wanders above 100% whenever the last gains are large; the ceiling is the
one thing known about an accuracy. The ceiling is 1 for values in [0, 1], 100 for percentages,
or `--ceiling`. The bounded form fits the value over the ceiling (its range is [chance, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from raysweep.analysis.points import InputError, higher_is_better

RISING, FALLING = "rising", "falling"
DIRECTIONS = (RISING, FALLING)
# Metrics where lower is better (exact names, or these with a prefix such as "task_loss").
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "nll", "error", "error_rate", "cross_entropy",
                   "bpb", "bits_per_byte", "wer", "cer")
# How clear the data's own trend must be to decide a direction (|Spearman rho|, mean over
# groups): with 3 sizes, one pair out of order gives 0.5; a flat or noisy table gives ~0.
MIN_TREND = 0.5
# Which forms describe which direction, and what to use instead.
RISING_ONLY = {"bounded": "power_law", "two_step": "chinchilla"}


@dataclass(frozen=True)
class Direction:
    way: str  # RISING or FALLING
    source: str  # why: "--direction", "metric 'accuracy'", "data: Spearman rho = +0.93"


def named_direction(metric: str | None) -> str | None:
    """RISING for accuracy-like names, FALLING for losses, None for names not known here."""
    if metric is None:
        return None
    if higher_is_better(metric):
        return RISING
    m = metric.lower()
    if m in LOWER_IS_BETTER or m.endswith(tuple(f"_{name}" for name in LOWER_IS_BETTER)):
        return FALLING
    return None


def trend(groups: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean over groups of Spearman's rho between size and the mean value at each size (groups
    with fewer than 2 sizes or constant values say nothing and are left out; nan if all are)."""
    from scipy.stats import spearmanr

    rhos = []
    for n, v in groups:
        ok = np.isfinite(n) & np.isfinite(v)
        sizes = np.unique(n[ok])
        means = np.array([v[ok][n[ok] == s].mean() for s in sizes])
        if len(sizes) >= 2 and np.ptp(means) > 0:
            rhos.append(float(spearmanr(sizes, means).statistic))
    return float(np.mean(rhos)) if rhos else np.nan


def resolve_direction(metric: str | None, requested: str | None,
                      groups: Sequence[tuple[np.ndarray, np.ndarray]], source: str) -> Direction:
    """The direction the forms are fitted in (see the module docstring). Raises InputError
    where neither the user, the name nor the data decides."""
    if requested is not None:
        if requested not in DIRECTIONS:
            raise InputError(f"--direction {requested!r}: allowed: {', '.join(DIRECTIONS)}")
        return Direction(requested, "--direction")
    named = named_direction(metric)
    if named is not None:
        return Direction(named, f"metric {metric!r}")
    rho = trend(groups)
    if np.isfinite(rho) and abs(rho) >= MIN_TREND:
        return Direction(RISING if rho > 0 else FALLING, f"data: Spearman rho = {rho:+.2f}")
    what = f"metric {metric!r} is not a name known here" if metric else "the table names no metric"
    raise InputError(
        f"{source}: cannot tell whether the values rise or fall with size: {what}, and their "
        f"trend is unclear (mean Spearman rho of value with n_params = {rho:+.2f}, needs "
        f"|rho| >= {MIN_TREND}); pass --direction rising (an accuracy-like score) or "
        f"--direction falling (a loss), or --metric accuracy / --metric loss")


def ceiling_of(values: np.ndarray, requested: float | None, metric: str, source: str) -> float:
    """The most a rising metric can reach: `--ceiling`, else 1 for values in [0, 1] and 100 for
    percentages."""
    top = float(np.nanmax(values)) if len(values) else 0.0
    if requested is not None:
        if top > requested:
            raise InputError(f"{source}: --ceiling {requested:g} is below the largest "
                             f"{metric!r}, {top:g}; pass a ceiling at or above it")
        return float(requested)
    if top <= 1.0:
        return 1.0
    if top <= 100.0:
        return 100.0
    raise InputError(f"{source}: {metric!r} rises with size and reaches {top:g}, above 1 and "
                     "100, so its ceiling is unknown; pass --ceiling C (the most it can reach)")


@dataclass(frozen=True)
class Target:
    """What a form is fitted to, as an affine map of the metric's value: y = (offset + sign *
    value) / scale, and the range y can take (a gap to the ceiling is never negative). `value`
    maps a fitted y back; intervals are clipped to the range first (noise draws can cross it,
    the metric cannot)."""

    name: str
    offset: float = 0.0
    sign: float = 1.0
    scale: float = 1.0
    y_min: float = -np.inf
    y_max: float = np.inf

    def y(self, value: np.ndarray) -> np.ndarray:
        return (self.offset + self.sign * np.asarray(value, dtype=float)) / self.scale

    def value(self, y: float) -> float:
        return float(self.sign * (y * self.scale - self.offset))

    def clip(self, lo: float, hi: float) -> tuple[float, float]:
        """An interval of y, inside the range y can take."""
        return float(np.clip(lo, self.y_min, self.y_max)), float(np.clip(hi, self.y_min,
                                                                          self.y_max))

    def value_interval(self, lo: float, hi: float) -> tuple[float, float]:
        a, b = (self.value(y) for y in self.clip(lo, hi))
        return (a, b) if a <= b else (b, a)


def target_for(form: str, direction: Direction, metric: str, ceiling: float | None,
               source: str) -> Target:
    """The Target a form is fitted to in this direction; InputError, naming the form to use,
    where the form cannot describe the direction."""
    if direction.way == FALLING and form in RISING_ONLY:
        what = ("a quantity that rises with size towards a ceiling (accuracy-like metrics, in "
                "[chance, 1])" if form == "bounded" else
                "an accuracy that rises as the task loss falls")
        raise InputError(f"{source}: form {form!r} describes {what}; {metric!r} falls with size "
                         f"({direction.source}); use --form {RISING_ONLY[form]}")
    if form == "lr_law":
        return Target(f"lr* ({'max' if direction.way == RISING else 'min'} {metric})")
    if direction.way == FALLING:
        return Target(metric)
    if form == "two_step":  # the sigmoid fits the value itself, which stays under its ceiling
        return Target(metric, y_min=0.0, y_max=ceiling)
    if form == "bounded":
        return Target(metric if ceiling == 1.0 else f"{metric} / {ceiling:g}", scale=ceiling,
                      y_min=0.0, y_max=1.0)
    return Target(f"{ceiling:g} - {metric}", offset=ceiling, sign=-1.0, y_min=0.0)
