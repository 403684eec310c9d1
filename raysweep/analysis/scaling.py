"""Scaling-law fits: the forms, point estimates, bootstrap intervals and held-out error.

Pure numerics: arrays in, frozen results out. Reading sweep tables lives in
`raysweep.analysis.points`, fitting groups of them in `raysweep.analysis.fits` and drawing in
`raysweep.analysis.plots`, so these fits can be checked on synthetic or published data.

The forms (each a small frozen dataclass with `estimate` and `predict`):

- `PowerLaw`   y = E + A * N^-alpha, for a loss or an error rate. The linear part (E, A) is solved
               exactly for each alpha (variable projection), so only a 1-D search remains.
- `Chinchilla` L(N, D) = E + A / N^alpha + B / D^beta, fitted as Hoffmann et al.'s approach 3 and
               Epoch AI's replication: log L = logsumexp(a - alpha log N, b - beta log D, e), Huber
               loss (delta 1e-3) on log residuals, L-BFGS-B with analytic gradients from a grid.
- `TwoStep`    the OLMo model ladder: task loss L(N, D) as Chinchilla, then
               accuracy = a / (1 + exp(-k (L - L0))) + b fitted on the observed task losses.
- `Bounded`    accuracy directly in N, bounded in [chance, 1]:
               acc = chance + (ceiling - chance) / (1 + (N0 / N)^alpha).
- `LrLaw`      the optimal learning rate per size (a quadratic in log lr through the best lr and
               its neighbours), then lr*(N) = C * N^-gamma.

`fit(form, points)` returns a `Fit`: the estimates with percentile bootstrap intervals
(resampling points, seeded), the residuals, a leave-largest-out extrapolation error, and flags
for estimates that sit on a bound of their search (such a "fit" says nothing about the trend).

Prediction intervals (`interval`, `backtest`, `widen`): bootstrap draws of the curve at a new
size plus residual noise, widened where the leave-largest-out backtest shows them too narrow.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Iterator

import numpy as np
from scipy.optimize import least_squares, minimize

try:
    from threadpoolctl import threadpool_limits
except ImportError:  # optional; see single_threaded_blas
    threadpool_limits = None


class NotEnoughPoints(ValueError):
    """A form has more free parameters than the data has distinct points."""


_blas_limited = False


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS on one thread inside. L-BFGS-B does many tiny BLAS calls per iteration; with
    OpenBLAS's default of one thread per core they busy-wait on each other, and on a loaded
    machine the Chinchilla fit was 13x slower (6.6 s vs 0.5 s). Re-entrant and cheap when
    nested, since entering threadpoolctl's limit costs about a millisecond."""
    global _blas_limited
    if _blas_limited or threadpool_limits is None:
        yield
        return
    _blas_limited = True
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        _blas_limited = False


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Points:
    """One row per observation. `y` is what the form models (loss, error, accuracy, or the score
    whose optimum over `lr` the lr law looks for)."""

    n: np.ndarray  # model size N, parameters
    y: np.ndarray
    d: np.ndarray | None = None  # training tokens D (Chinchilla, two-step)
    loss: np.ndarray | None = None  # task loss, the two-step form's intermediate quantity
    lr: np.ndarray | None = None  # learning rate (lr law)

    def __post_init__(self) -> None:
        for name in ("n", "y", "d", "loss", "lr"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.asarray(value, dtype=float).reshape(-1))
        lengths = {name: len(getattr(self, name)) for name in ("n", "y", "d", "loss", "lr")
                   if getattr(self, name) is not None}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"Points columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.n)

    def take(self, index: np.ndarray) -> Points:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Points(self.n[index], self.y[index], pick(self.d), pick(self.loss), pick(self.lr))

    def require(self, form: str, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"form {form!r} needs the column(s) {', '.join(missing)}")


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    value: float
    lo: float  # lower bound of the bootstrap interval (nan without a bootstrap)
    hi: float


@dataclass(frozen=True)
class Holdout:
    """Fit without the largest size, predict it. With several points at that size (seeds, token
    counts) `pred` and `true` are means and the errors are means over those points."""

    n_params: float
    n_points: int
    pred: float
    true: float
    abs_err: float
    rel_err: float


@dataclass(frozen=True, eq=False)
class Fit:
    """A fitted form: estimates with intervals, residuals, held-out error, and the bootstrap
    draws (kept for prediction bands). `fit["alpha"]` is an estimate, `fit.param("alpha")` the
    estimate with its interval."""

    form: Form
    params: tuple[Param, ...]
    n_points: int  # observations the form was fitted on (lr law: one optimum per size)
    n_sizes: int
    residuals: np.ndarray  # observed - predicted, in the units of y
    holdout: Holdout | None  # None when too few sizes remain without the largest
    boot: np.ndarray  # (resamples that fitted, parameters): the draws behind the intervals
    level: float  # confidence level of the intervals
    flags: tuple[str, ...] = ()  # estimates on a bound of the search, e.g. "A at lower bound 0"

    @property
    def name(self) -> str:
        return self.form.name

    @property
    def values(self) -> np.ndarray:
        return np.array([p.value for p in self.params])

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(f"{self.name} has no parameter {name!r}; it has "
                       f"{', '.join(p.name for p in self.params)}")

    def __getitem__(self, name: str) -> float:
        return self.param(name).value

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals**2))) if len(self.residuals) else np.nan

    def predict(self, n: np.ndarray, d: np.ndarray | None = None) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return self.form.predict(self.values, Points(n, np.full(n.shape, np.nan), d=d))

    def band(self, n: np.ndarray, d: np.ndarray | None = None,
             level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the bootstrap fits' predictions (nan without draws)."""
        n = np.asarray(n, dtype=float)
        level = self.level if level is None else level
        if len(self.boot) == 0:
            return np.full(n.shape, np.nan), np.full(n.shape, np.nan)
        grid = Points(n, np.full(n.shape, np.nan), d=d)
        draws = np.array([self.form.predict(theta, grid) for theta in self.boot])
        return _percentile_interval(draws, level)


# --- the fit driver --------------------------------------------------------------------------


class Form:
    """A functional form; the forms below are frozen dataclasses deriving from it. A form may
    also define `estimate_batch(points, index) -> (B, P)`, fitting the resamples
    `points.take(index[b])` all at once (nan rows for draws it cannot fit); the bootstrap uses
    it where present. The defaults fit forms of model size N alone."""

    name: ClassVar[str]
    param_names: ClassVar[tuple[str, ...]]
    # Resample within each size (keeps every size in every draw). The lr law needs this: an
    # optimum comes from all of a size's learning rates, and a size missing from a draw is lost.
    resample_within_size: ClassVar[bool] = False
    distinct: ClassVar[str] = "sizes N"  # what counts as a separate point, for messages
    # The form's y is the metric (or a transform of it) and can be given prediction intervals;
    # the lr law's y is a learning rate derived from the points, which `interval` does not do.
    predicts_metric: ClassVar[bool] = True

    @property
    def min_points(self) -> int:
        return len(self.param_names)

    def bounds(self, observed: Points) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper limits of the estimate's search, per parameter (+-inf: none)."""
        k = len(self.param_names)
        return np.full(k, -np.inf), np.full(k, np.inf)

    def bound_tolerance(self, observed: Points) -> np.ndarray:
        """How close to a limit an estimate counts as on it: BOUND_TOLERANCE of the search's
        width; exactly on it where the search is open on the other side."""
        lower, upper = self.bounds(observed)
        width = upper - lower
        return np.where(np.isfinite(width), BOUND_TOLERANCE * width, 0.0)

    def observed(self, points: Points) -> Points:
        """The observations the form's parameters describe (most forms: the points themselves)."""
        return points

    def n_distinct(self, observed: Points) -> int:
        """How many observations carry separate information (duplicated x do not)."""
        return len(np.unique(observed.n))

    def estimate(self, observed: Points, init: np.ndarray | None = None) -> np.ndarray:
        """Parameter values in `param_names` order; `init` is a warm start (bootstrap)."""
        raise NotImplementedError

    def predict(self, theta: np.ndarray, points: Points) -> np.ndarray:
        raise NotImplementedError


def fit(form: Form, points: Points, *, n_boot: int = 1000, level: float = 0.95,
        seed: int = 0, holdout: bool = True) -> Fit:
    """Estimate `form` on `points`, with bootstrap intervals and (with `holdout`) the
    leave-largest-out error."""
    with single_threaded_blas():
        return _fit(form, points, n_boot, level, seed, holdout)


def _fit(form: Form, points: Points, n_boot: int, level: float, seed: int,
         holdout: bool = True) -> Fit:
    observed = form.observed(points)
    have = form.n_distinct(observed)
    if have < form.min_points:
        raise NotEnoughPoints(
            f"form {form.name!r} has {len(form.param_names)} parameters and needs "
            f"{form.min_points} or more distinct {form.distinct}; got {have} "
            f"(from {len(points)} rows)"
        )
    theta = form.estimate(observed)
    residuals = observed.y - form.predict(theta, observed)
    boot = _bootstrap(form, points, theta, n_boot, seed)
    if len(boot):
        lo, hi = _percentile_interval(boot, level)
    else:
        lo = hi = np.full(len(theta), np.nan)
    params = tuple(
        Param(name, float(v), float(a), float(b))
        for name, v, a, b in zip(form.param_names, theta, lo, hi)
    )
    return Fit(
        form=form,
        params=params,
        n_points=len(observed),
        n_sizes=len(np.unique(observed.n)),
        residuals=residuals,
        holdout=leave_largest_out(form, points) if holdout else None,
        boot=boot,
        level=level,
        flags=bound_flags(form, theta, observed),
    )


# Within this fraction of the search's width (`Form.bound_tolerance`) an estimate counts as on
# its bound. The power law's A lands exactly on 0 when the closed-form solve picks that
# boundary, E on 0 or within ~1e-10 of the data's scale, alpha within 1e-8 of a grid end; trf
# (the bounded form) stops within ~1e-8 of a bound.
BOUND_TOLERANCE = 1e-6


def bound_flags(form: Form, theta: np.ndarray, observed: Points) -> tuple[str, ...]:
    """"<param> at lower/upper bound <b>" for each estimate on a limit of the search."""
    lower, upper = form.bounds(observed)
    flags = []
    for name, value, lo, hi, tol in zip(form.param_names, theta, lower, upper,
                                        form.bound_tolerance(observed)):
        if np.isfinite(lo) and value <= lo + tol:
            flags.append(f"{name} at lower bound {lo:.6g}")
        elif np.isfinite(hi) and value >= hi - tol:
            flags.append(f"{name} at upper bound {hi:.6g}")
    return tuple(flags)


def _percentile_interval(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - level) / 2 * 100
    lo, hi = np.nanpercentile(draws, [tail, 100 - tail], axis=0)
    return lo, hi


def resample_indices(rng: np.random.Generator, n: np.ndarray, n_boot: int,
                     within_size: bool) -> np.ndarray:
    """(n_boot, len(n)) row indices: plain case resampling, or within each size (the columns
    of one size stay together, in the order of `np.unique(n)`)."""
    if not within_size:
        return rng.integers(0, len(n), (n_boot, len(n)))
    blocks = []
    for size in np.unique(n):
        rows = np.flatnonzero(n == size)
        blocks.append(rows[rng.integers(0, len(rows), (n_boot, len(rows)))])
    return np.concatenate(blocks, axis=1)


def _bootstrap(form: Form, points: Points, theta: np.ndarray, n_boot: int,
               seed: int) -> np.ndarray:
    """Refit on `n_boot` resamples of the rows, warm-started at the full-data estimate. Draws
    with too few distinct points to pin the parameters are skipped, not forced. Forms with an
    `estimate_batch` fit all draws at once (the cheap forms, where the loop would dominate)."""
    if n_boot <= 0:
        return np.empty((0, len(theta)))
    rng = np.random.default_rng(seed)
    index = resample_indices(rng, points.n, n_boot, form.resample_within_size)
    batch = getattr(form, "estimate_batch", None)
    if batch is not None:
        draws = batch(points, index)
    else:
        draws = np.full((n_boot, len(theta)), np.nan)
        for i, rows in enumerate(index):
            observed = form.observed(points.take(rows))
            if form.n_distinct(observed) >= form.min_points:
                draws[i] = form.estimate(observed, init=theta)
    return draws[np.isfinite(draws).all(axis=1)]


def _count_distinct(values: np.ndarray) -> np.ndarray:
    """Distinct values per row of a 2-D array."""
    ordered = np.sort(values, axis=1)
    return 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1)


def leave_largest_out(form: Form, points: Points) -> Holdout | None:
    """Fit without the largest size, then predict that size's observations."""
    largest = points.n.max()
    rest = form.observed(points.take(np.flatnonzero(points.n < largest)))
    if form.n_distinct(rest) < form.min_points:
        return None
    theta = form.estimate(rest)
    observed = form.observed(points)
    held = observed.take(np.flatnonzero(observed.n == largest))
    pred = form.predict(theta, held)
    abs_err = np.abs(pred - held.y)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = abs_err / np.abs(held.y)
    return Holdout(
        n_params=float(largest),
        n_points=len(held),
        pred=float(pred.mean()),
        true=float(held.y.mean()),
        abs_err=float(abs_err.mean()),
        rel_err=float(rel_err.mean()),
    )


# --- prediction intervals ----------------------------------------------------------------------

# Noise draws per bootstrap draw: enough samples for the interval's tails (0.025 of 4,000 is
# 100 samples) when n_boot is small, at no cost worth counting.
NOISE_SAMPLES = 4000


def noise_sd(fit: Fit) -> float:
    """The residual standard deviation, with the degrees of freedom the fit used up: sqrt(SSR /
    (n - p)); 0 where the form has as many parameters as points (no residual to learn from)."""
    dof = fit.n_points - len(fit.params)
    if dof <= 0:
        return 0.0
    return float(np.sqrt(np.sum(fit.residuals**2) / dof))


def predict_draws(form: Form, draws: np.ndarray, n: np.ndarray,
                  d: np.ndarray | None = None) -> np.ndarray:
    """The curve of every parameter draw (rows of `draws`) at every (n, d): shape (B, m). The
    forms' `predict` broadcasts, so the draws go in as one (P, B, 1) array, not a loop."""
    n = np.asarray(n, dtype=float).reshape(-1)
    points = Points(n, np.full(n.shape, np.nan), d=d)
    return np.broadcast_to(form.predict(draws.T[:, :, None], points), (len(draws), len(n)))


def interval(fit: Fit, n: np.ndarray, d: np.ndarray | None = None, level: float | None = None,
             seed: int = 0) -> tuple[float, float, float]:
    """Prediction interval for the mean of new observations at the rows (n, d), one each (a
    single new model: one row): (estimate, lo, hi) on the scale of y.

    The estimate is the fitted curve's mean over the rows. The interval holds the percentiles
    of bootstrap draws of that mean (parameter uncertainty, `fit.boot`) plus normal noise of
    sd `noise_sd(fit) / sqrt(rows)` (the new observations' own scatter). The draws' spread
    around the estimate is scaled by sqrt(n / (n - p)), the degrees-of-freedom correction that
    the residual variance gets too: a resample fits its p parameters to its own n points, so
    its curve scatters too little. Without it the 95% interval covered 92-93% of new
    observations of a known power law (8 and 24 points, 400 draws each), with it 95%
    (test_predict checks). A Student t for the noise covered as well on such data but, with
    the one residual degree of freedom of a model family of 4 sizes, made the interval span
    the whole metric. lo and hi are nan without bootstrap draws, and for a fit with as many
    parameters as points: it goes through every point, every resample that can be fitted
    is the same curve, and nothing measures how far off it is (`widen` treats such a
    backtest as a miss)."""
    if not fit.form.predicts_metric:
        raise ValueError(f"form {fit.name!r} predicts no metric; it has no prediction interval")
    level = fit.level if level is None else level
    n = np.asarray(n, dtype=float).reshape(-1)
    estimate = float(np.mean(fit.predict(n, d)))
    dof = fit.n_points - len(fit.params)
    if len(fit.boot) == 0 or dof <= 0:
        return estimate, np.nan, np.nan
    inflate = np.sqrt(fit.n_points / dof)
    curves = estimate + inflate * (predict_draws(fit.form, fit.boot, n, d).mean(axis=1)
                                   - estimate)
    repeats = -(-NOISE_SAMPLES // len(curves))
    rng = np.random.default_rng([seed, 1])  # apart from the bootstrap's own stream
    noise = rng.normal(0.0, noise_sd(fit) / np.sqrt(len(n)), len(curves) * repeats)
    samples = np.repeat(curves, repeats) + noise
    lo, hi = _percentile_interval(samples, level)
    return estimate, float(lo), float(hi)


@dataclass(frozen=True)
class Backtest:
    """The largest size predicted from the smaller ones: (estimate, lo, hi) of the mean of the
    largest size's observations, from a fit without them, against what they were."""

    n_params: float  # the size held out
    n_prev: float  # the largest size the backtest's fit saw
    n_points: int  # observations at the held-out size
    pred: float
    lo: float
    hi: float
    true: float

    @property
    def covered(self) -> bool:  # False without an interval (nan): nothing shows it is enough
        return bool(self.lo <= self.true <= self.hi)


@dataclass(frozen=True)
class Forecast:
    """A prediction interval after the backtest rule (`widen`): `lo`/`hi`, and before it."""

    n_params: float
    pred: float
    lo: float
    hi: float
    raw_lo: float
    raw_hi: float
    widen: float  # the half-width added in quadrature (0: not widened)
    backtest: Backtest | None  # the evidence the rule looked at


def widen(pred: float, lo: float, hi: float, n_params: float,
          backtest: Backtest | None) -> Forecast:
    """The backtest rule. Where the largest size's truth fell outside the interval its smaller
    sizes gave (`backtest.covered` false), the intervals are too narrow for this data: the
    curve misses by more than the bootstrap and the noise allow (a form that does not fit the
    trend, a break in it). Each half-width at N then grows, in quadrature, by

        r = |backtest error| * ln(N / N_max) / ln(N_max / N_prev),

    the miss the backtest saw, scaled by how far N extrapolates past the largest fitted size
    N_max relative to the backtest's own step (from N_prev to N_max): a misspecified curve
    drifts from the truth about linearly in log N. At the backtest's own distance the widened
    interval just holds a miss of the size seen. Sizes at or below N_max (interpolation) and
    groups whose backtest covered are left as they are; a single miss is weak evidence, so the
    rule adds that miss, not a multiple of it, and the coverage over groups is reported."""
    r = 0.0
    if backtest is not None and not backtest.covered and n_params > backtest.n_params:
        step = np.log(backtest.n_params / backtest.n_prev)
        r = abs(backtest.true - backtest.pred) * np.log(n_params / backtest.n_params) / step
    return Forecast(
        n_params=float(n_params), pred=pred,
        lo=pred - float(np.hypot(max(pred - lo, 0.0), r)),
        hi=pred + float(np.hypot(max(hi - pred, 0.0), r)),
        raw_lo=lo, raw_hi=hi, widen=float(r), backtest=backtest,
    )


def _without_largest(form: Form, points: Points) -> tuple[Points, Points] | None:
    """(the points below the largest size, those at it); None when the rest cannot be fitted."""
    largest = points.n.max()
    rest = points.take(np.flatnonzero(points.n < largest))
    if len(rest) == 0 or form.n_distinct(form.observed(rest)) < form.min_points:
        return None
    return rest, points.take(np.flatnonzero(points.n == largest))


def backtest(form: Form, points: Points, *, n_boot: int, level: float = 0.95,
             seed: int = 0) -> Backtest | None:
    """The raw interval (`interval`, no widening) at the largest size of `points`, from a
    bootstrapped fit of the smaller ones, against the largest size's mean: the evidence `widen`
    uses for forecasts from a fit of all of `points`. None where the form cannot be fitted
    without the largest size, or has no prediction interval (the lr law)."""
    split = _without_largest(form, points) if form.predicts_metric else None
    if split is None:
        return None
    rest, held = split
    # No holdout of its own: the backtest needs the bootstrap, not another point estimate.
    rest_fit = fit(form, rest, n_boot=n_boot, level=level, seed=seed, holdout=False)
    pred, lo, hi = interval(rest_fit, held.n, held.d, level, seed)
    return Backtest(float(held.n[0]), float(rest.n.max()), len(held), pred, lo, hi,
                    float(held.y.mean()))


def holdout_forecast(form: Form, points: Points, outer: Backtest, *, n_boot: int,
                     level: float = 0.95, seed: int = 0) -> Forecast:
    """What the whole rule would have predicted for the largest size of `points` before it was
    measured: `outer` (that size's backtest) widened by the backtest of the smaller sizes alone.
    Its coverage over many groups is the check of the rule itself."""
    rest, _ = _without_largest(form, points)
    inner = backtest(form, rest, n_boot=n_boot, level=level, seed=seed)
    return widen(outer.pred, outer.lo, outer.hi, outer.n_params, inner)


# --- power law in N --------------------------------------------------------------------------


def _fit_offset_scale(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of y ~ E + A x with E >= 0 and A >= 0 along the last axis, for every
    leading index at once (x and y broadcast). Returns E, A and the sum of squared errors.

    With two unknowns the constrained optimum is the unconstrained one if feasible, else the
    better of the two boundaries (E = 0, or A = 0); all three are computed and the best kept."""
    x, y = np.broadcast_arrays(x, y)
    x_mean, y_mean = x.mean(axis=-1), y.mean(axis=-1)
    xc = x - x_mean[..., None]
    sxx = (xc**2).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_free = np.where(sxx > 0, (xc * (y - y_mean[..., None])).sum(axis=-1) / sxx, 0.0)
        a_origin = np.maximum((x * y).sum(axis=-1) / (x**2).sum(axis=-1), 0.0)
    candidates = [  # (E, A, feasible)
        (y_mean - a_free * x_mean, a_free, (a_free >= 0) & (y_mean - a_free * x_mean >= 0)),
        (np.zeros_like(a_origin), a_origin, np.ones(a_origin.shape, dtype=bool)),
        (np.maximum(y_mean, 0.0), np.zeros_like(y_mean), np.ones(y_mean.shape, dtype=bool)),
    ]
    best_e, best_a, best_sse = None, None, None
    for e, a, feasible in candidates:
        sse = ((y - e[..., None] - a[..., None] * x) ** 2).sum(axis=-1)
        sse = np.where(feasible, sse, np.inf)
        if best_sse is None:
            best_e, best_a, best_sse = e, a, sse
        else:
            better = sse < best_sse
            best_e, best_a = np.where(better, e, best_e), np.where(better, a, best_a)
            best_sse = np.where(better, sse, best_sse)
    return best_e, best_a, best_sse


_GOLDEN = (np.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class PowerLaw(Form):
    """y = E + A * N^-alpha with E, A >= 0 and alpha in [0, max_alpha].

    For a fixed alpha the model is linear in (E, A), solved in closed form; alpha is found on a
    grid and refined by golden-section search inside the best grid cell. Both steps run on many
    data sets at once, so the bootstrap costs about as much as one fit."""

    max_alpha: float = 3.0
    grid_size: int = 61  # steps of 0.05 in alpha; the golden-section search does the rest
    refine_steps: int = 40  # golden-section steps: shrink the bracket 0.618^40 ~ 1e-8 times

    name: ClassVar[str] = "power_law"
    param_names: ClassVar[tuple[str, ...]] = ("E", "A", "alpha")

    def bounds(self, observed: Points) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(3), np.array([np.inf, np.inf, self.max_alpha])

    def bound_tolerance(self, observed: Points) -> np.ndarray:
        # E is in the units of y: on its bound within a millionth of the data's scale. A = 0
        # exactly when the solve chose that boundary (a tiny A still bends the curve).
        scale = float(np.max(np.abs(observed.y))) if len(observed) else 0.0
        return np.array([BOUND_TOLERANCE * scale, 0.0, BOUND_TOLERANCE * self.max_alpha])

    def estimate(self, observed: Points, init: np.ndarray | None = None) -> np.ndarray:
        return self._estimate_many(observed.n[None, :], observed.y[None, :])[0]

    def estimate_batch(self, points: Points, index: np.ndarray) -> np.ndarray:
        n = points.n[index]
        out = self._estimate_many(n, points.y[index])
        out[_count_distinct(n) < self.min_points] = np.nan
        return out

    def _estimate_many(self, n: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit each row of n, y (shape (B, m)); returns (B, 3) = (E, A, alpha)."""
        # N over its geometric mean keeps N^-alpha near 1 for every alpha (no overflow, and
        # the closed-form solve stays well conditioned).
        scale = np.exp(np.log(n).mean(axis=1, keepdims=True))
        log_x = np.log(n / scale)

        def sse(alpha: np.ndarray) -> np.ndarray:  # alpha (B, K) -> (B, K)
            return _fit_offset_scale(np.exp(-alpha[..., None] * log_x[:, None, :]),
                                     y[:, None, :])[2]

        grid = np.linspace(0.0, self.max_alpha, self.grid_size)
        best = np.argmin(sse(np.broadcast_to(grid, (len(n), len(grid)))), axis=1)
        lo = grid[np.maximum(best - 1, 0)]
        hi = grid[np.minimum(best + 1, len(grid) - 1)]
        # Golden-section search on [lo, hi], vectorized over rows. (Both probes are evaluated
        # each step; reusing one would save half of a cheap step at the cost of clarity.)
        for _ in range(self.refine_steps):
            c, d = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
            left = sse(c[:, None])[:, 0] < sse(d[:, None])[:, 0]  # the minimum is in [lo, d]
            lo, hi = np.where(left, lo, c), np.where(left, d, hi)
        alpha = (lo + hi) / 2
        x = np.exp(-alpha[:, None] * log_x)
        e, a, _ = _fit_offset_scale(x, y)
        return np.stack([e, a * scale[:, 0] ** alpha, alpha], axis=1)

    def predict(self, theta: np.ndarray, points: Points) -> np.ndarray:
        e, a, alpha = theta
        return e + a * points.n**-alpha


# --- Chinchilla L(N, D), approach 3 ----------------------------------------------------------

# Epoch AI's grid of starts (Besiroglu et al. 2024): internal order (a, b, e, alpha, beta).
EPOCH_GRID: tuple[tuple[float, ...], ...] = (
    tuple(np.arange(0.0, 30.0, 5.0)),  # a = log A
    tuple(np.arange(0.0, 30.0, 5.0)),  # b = log B
    tuple(np.arange(-1.0, 1.5, 0.5)),  # e = log E
    tuple(np.arange(0.0, 2.5, 0.5)),  # alpha
    tuple(np.arange(0.0, 2.5, 0.5)),  # beta
)


def huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss, as scipy.special.huber(delta, r): quadratic inside |r| <= delta, linear out."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def chinchilla_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                         log_y: np.ndarray, delta: float) -> tuple[float, np.ndarray]:
    """Sum of Huber losses of log-space residuals, and its gradient, for theta = (a, b, e, alpha,
    beta). The softmax weights of the log-sum-exp are the derivatives of log L with respect to
    its three terms, so the gradient costs little beyond the loss. Written out term by term
    (no stack, no logsumexp call): L-BFGS-B calls it thousands of times on small arrays, where
    numpy's per-call overhead is the cost."""
    a, b, e, alpha, beta = theta
    term_n = a - alpha * log_n
    term_d = b - beta * log_d
    top = np.maximum(np.maximum(term_n, term_d), e)
    w_n, w_d, w_e = np.exp(term_n - top), np.exp(term_d - top), np.exp(e - top)
    total = w_n + w_d + w_e
    residual = top + np.log(total) - log_y
    slope = np.clip(residual, -delta, delta)  # d huber / d residual
    loss = slope @ (residual - 0.5 * slope)  # = sum of huber(residual, delta)
    slope_n, slope_d = slope * w_n / total, slope * w_d / total
    grad = np.array([slope_n.sum(), slope_d.sum(), slope @ (w_e / total),
                     -(slope_n @ log_n), -(slope_d @ log_d)])
    return float(loss), grad


def _chinchilla_objective_many(thetas: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                               log_y: np.ndarray, delta: float) -> np.ndarray:
    """The objective at many starts at once (no gradient), to rank a grid of starts."""
    out = np.empty(len(thetas))
    chunk = max(1, 2_000_000 // max(len(log_n), 1))  # bounds the (starts, points) temporaries
    for i in range(0, len(thetas), chunk):
        a, b, e, alpha, beta = (c[:, None] for c in thetas[i : i + chunk].T)
        terms = np.stack([a - alpha * log_n, b - beta * log_d,
                          np.broadcast_to(e, (len(a), len(log_n)))])
        top = terms.max(axis=0)
        pred = top + np.log(np.exp(terms - top).sum(axis=0))
        out[i : i + chunk] = huber(pred - log_y, delta).sum(axis=1)
    return out


# The objective is small (about 1e-3 on the Chinchilla data) and flat in log A and log B, so the
# default tolerances stop a warm start (the bootstrap's) after a step or two and the intervals
# come out far too narrow. These make every run converge; the cost is a few more iterations.
LBFGS_OPTIONS = {"ftol": 1e-12, "gtol": 1e-9}


def log_params(theta: np.ndarray) -> np.ndarray:
    """(E, A, alpha, B, beta) -> the optimizer's (log A, log B, log E, alpha, beta)."""
    e, a, alpha, b, beta = theta
    return np.array([np.log(a), np.log(b), np.log(e), alpha, beta])


def natural_params(x: np.ndarray) -> np.ndarray:
    """The optimizer's (log A, log B, log E, alpha, beta) -> (E, A, alpha, B, beta)."""
    a, b, e, alpha, beta = x
    return np.array([np.exp(e), np.exp(a), alpha, np.exp(b), beta])


@dataclass(frozen=True)
class Chinchilla(Form):
    """L(N, D) = E + A / N^alpha + B / D^beta (Hoffmann et al. approach 3, as Epoch AI fit it).

    `starts`: how many of the grid's starts to polish with L-BFGS-B. The objective is evaluated
    at every grid point in one vectorized pass and the best `starts` are optimized; `None`
    optimizes all 4500, exactly Epoch's procedure (about 40x slower; the same optimum on the
    Chinchilla data, where even the best 10 starts find it)."""

    delta: float = 1e-3
    starts: int | None = 100
    grid: tuple[tuple[float, ...], ...] = field(default=EPOCH_GRID, repr=False)

    name: ClassVar[str] = "chinchilla"
    param_names: ClassVar[tuple[str, ...]] = ("E", "A", "alpha", "B", "beta")
    distinct: ClassVar[str] = "(N, D) pairs"  # what counts as a separate point

    def observed(self, points: Points) -> Points:
        points.require(self.name, "d")
        return points

    def n_distinct(self, observed: Points) -> int:
        return len({(n, d) for n, d in zip(observed.n, observed.d)})

    def grid_starts(self) -> np.ndarray:
        return np.array(list(itertools.product(*self.grid)), dtype=float)

    def estimate(self, observed: Points, init: np.ndarray | None = None) -> np.ndarray:
        with single_threaded_blas():
            return self.estimate_logs(np.log(observed.n), np.log(observed.d),
                                      np.log(observed.y), init=init)

    def screened_starts(self, log_n: np.ndarray, log_d: np.ndarray,
                        log_y: np.ndarray) -> np.ndarray:
        """The grid starts L-BFGS-B polishes: the best `starts` by the objective (all of them
        with `starts=None`), in the optimizer's (log A, log B, log E, alpha, beta)."""
        starts = self.grid_starts()
        if self.starts is not None and self.starts < len(starts):
            objective = _chinchilla_objective_many(starts, log_n, log_d, log_y, self.delta)
            starts = starts[np.argsort(objective, kind="stable")[: self.starts]]
        return starts

    def estimate_logs(self, log_n: np.ndarray, log_d: np.ndarray, log_y: np.ndarray,
                      init: np.ndarray | None = None) -> np.ndarray:
        args = (log_n, log_d, log_y, self.delta)
        if init is not None:
            starts = log_params(init)[None, :]
        else:
            starts = self.screened_starts(log_n, log_d, log_y)
        best_x, best_f = None, np.inf
        for x0 in starts:
            res = minimize(chinchilla_objective, x0, args=args, jac=True, method="L-BFGS-B",
                           options=LBFGS_OPTIONS)
            if res.fun < best_f:
                best_x, best_f = res.x, res.fun
        return natural_params(best_x)

    def predict(self, theta: np.ndarray, points: Points) -> np.ndarray:
        e, a, alpha, b, beta = theta
        if points.d is None:
            raise ValueError("chinchilla predictions need D (tokens) as well as N")
        return e + a * points.n**-alpha + b * points.d**-beta


# --- two-step accuracy prediction (OLMo model ladder) ----------------------------------------


def sigmoid_accuracy(theta: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """accuracy = a / (1 + exp(-k (L - L0))) + b."""
    a, k, l0, b = theta
    return a * _expit(k * (loss - l0)) + b


def sigmoid_accuracy_jacobian(theta: np.ndarray, loss: np.ndarray) -> np.ndarray:
    a, k, l0, b = theta
    s = _expit(k * (loss - l0))
    ds = s * (1 - s)
    return np.stack([s, a * ds * (loss - l0), -a * ds * k, np.ones_like(loss)], axis=1)


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # overflow-free logistic


def _fit_sigmoid(loss: np.ndarray, acc: np.ndarray, init: np.ndarray | None) -> np.ndarray:
    def residual(theta):
        return sigmoid_accuracy(theta, loss) - acc

    def jac(theta):
        return sigmoid_accuracy_jacobian(theta, loss)

    if init is not None:
        starts = [init]
    else:
        # Accuracy falls as loss rises: a > 0 with k < 0. Steepness spans a few decades.
        spread, width = acc.max() - acc.min(), max(np.ptp(loss), 1e-6)
        starts = [np.array([max(spread, 1e-3), -k / width, np.median(loss), acc.min()])
                  for k in (1.0, 4.0, 16.0)]
    best = min((least_squares(residual, x0, jac=jac, method="trf") for x0 in starts),
               key=lambda r: r.cost)
    return best.x


@dataclass(frozen=True)
class TwoStep(Form):
    """Task loss L(N, D) as Chinchilla, then accuracy as a sigmoid of the task loss. Step 2 is
    fitted on the observed losses; predictions chain the two steps from (N, D)."""

    loss_form: Chinchilla = Chinchilla()

    name: ClassVar[str] = "two_step"
    param_names: ClassVar[tuple[str, ...]] = Chinchilla.param_names + ("a", "k", "L0", "b")
    distinct: ClassVar[str] = "(N, D) pairs"  # what counts as a separate point

    @property
    def min_points(self) -> int:
        return self.loss_form.min_points  # each step is fitted alone; step 2 has 4 parameters

    def observed(self, points: Points) -> Points:
        points.require(self.name, "d", "loss")
        return points

    def n_distinct(self, observed: Points) -> int:
        return self.loss_form.n_distinct(observed)

    def estimate(self, observed: Points, init: np.ndarray | None = None) -> np.ndarray:
        losses = Points(observed.n, observed.loss, d=observed.d)
        step1 = self.loss_form.estimate(losses, None if init is None else init[:5])
        step2 = _fit_sigmoid(observed.loss, observed.y, None if init is None else init[5:])
        return np.concatenate([step1, step2])

    def predict_loss(self, theta: np.ndarray, points: Points) -> np.ndarray:
        return self.loss_form.predict(theta[:5], points)

    def predict(self, theta: np.ndarray, points: Points) -> np.ndarray:
        return sigmoid_accuracy(theta[5:], self.predict_loss(theta, points))


# --- accuracy bounded in [chance, 1], directly in N ------------------------------------------


def bounded_accuracy(theta: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    ceiling, alpha, log10_n0 = theta
    return chance + (ceiling - chance) * _expit(alpha * np.log(10) * (np.log10(n) - log10_n0))


def bounded_accuracy_jacobian(theta: np.ndarray, n: np.ndarray, chance: float) -> np.ndarray:
    ceiling, alpha, log10_n0 = theta
    u = np.log(10) * (np.log10(n) - log10_n0)
    s = _expit(alpha * u)
    ds = s * (1 - s) * (ceiling - chance)
    return np.stack([s, ds * u, -ds * alpha * np.log(10)], axis=1)


@dataclass(frozen=True)
class Bounded(Form):
    """acc = chance + (ceiling - chance) / (1 + (N0 / N)^alpha), ceiling in [chance, 1]: a
    sigmoid in log N that starts at chance and saturates below 1."""

    chance: float = 0.0

    name: ClassVar[str] = "bounded"
    param_names: ClassVar[tuple[str, ...]] = ("ceiling", "alpha", "log10_n0")

    def bounds(self, observed: Points) -> tuple[np.ndarray, np.ndarray]:
        log_n = np.log10(observed.n)
        return (np.array([self.chance, 1e-3, log_n.min() - 6]),
                np.array([1.0, 20.0, log_n.max() + 6]))

    def estimate(self, observed: Points, init: np.ndarray | None = None) -> np.ndarray:
        n, y, chance = observed.n, observed.y, self.chance
        log_n = np.log10(n)
        lower, upper = self.bounds(observed)
        if init is None:
            init = self._grid_start(log_n, y)
        x0 = np.clip(init, lower + 1e-9, upper - 1e-9)
        res = least_squares(
            lambda t: bounded_accuracy(t, n, chance) - y, x0,
            jac=lambda t: bounded_accuracy_jacobian(t, n, chance),
            bounds=(lower, upper), method="trf",
        )
        return res.x

    def _grid_start(self, log_n: np.ndarray, y: np.ndarray) -> np.ndarray:
        # For fixed (alpha, N0) the ceiling enters linearly: solve it, keep the best pair.
        alphas = np.geomspace(0.05, 5.0, 16)
        mids = np.linspace(log_n.min() - 2, log_n.max() + 2, 25)
        alpha, mid = (g.reshape(-1, 1) for g in np.meshgrid(alphas, mids))
        s = _expit(alpha * np.log(10) * (log_n[None, :] - mid))
        excess = y - self.chance
        height = np.clip((s * excess).sum(1) / (s * s).sum(1), 0.0, 1.0 - self.chance)
        sse = ((excess - height[:, None] * s) ** 2).sum(1)
        best = int(np.argmin(sse))
        return np.array([self.chance + height[best], alpha[best, 0], mid[best, 0]])

    def predict(self, theta: np.ndarray, points: Points) -> np.ndarray:
        return bounded_accuracy(theta, points.n, self.chance)


# --- optimal learning rate against N ---------------------------------------------------------


@dataclass(frozen=True)
class LrOptima:
    n: np.ndarray  # one entry per size
    lr: np.ndarray  # the interpolated optimum
    at_edge: np.ndarray  # the best lr was the smallest or largest tried: the optimum is a bound


def _parabola_vertex(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertex and curvature of the parabola through three points; x, y have shape (..., 3)."""
    x0, x1, x2 = np.moveaxis(x, -1, 0)
    y0, y1, y2 = np.moveaxis(y, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
        c2 = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
        c1 = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
        return -c1 / (2 * c2), c2


def optimal_log_lr(log_lr: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interpolated optimum per row of `mean` (shape (B, J), the score to maximize at each
    of the sorted `log_lr`, nan where an lr is absent from that row).

    Take the best lr, put a parabola through it and its nearest present neighbours, and take
    the vertex (kept between the neighbours). At the edge of the grid, or where the three
    points do not bend downwards, the best lr itself is the answer. Returns (log lr*, at_edge).
    """
    rows = np.arange(len(mean))
    present = ~np.isnan(mean)
    best = np.argmax(np.where(present, mean, -np.inf), axis=1)
    position = np.arange(mean.shape[1])
    # Nearest present lr to the left and right of the best (-1 / J where there is none).
    left = np.where(present & (position < best[:, None]), position, -1).max(axis=1)
    right = np.where(present & (position > best[:, None]), position, mean.shape[1]).min(axis=1)
    inner = (left >= 0) & (right < mean.shape[1])
    pick = np.stack([np.clip(left, 0, None), best, np.clip(right, None, mean.shape[1] - 1)], 1)
    x, y = log_lr[pick], mean[rows[:, None], pick]
    vertex, curvature = _parabola_vertex(x, y)
    bends = inner & (curvature < 0)
    optimum = np.where(bends, np.clip(vertex, x[:, 0], x[:, 2]), log_lr[best])
    at_edge = ~inner & (present.sum(axis=1) > 1)
    return optimum, at_edge


def _mean_by_lr(lr_index: np.ndarray, score: np.ndarray, n_lrs: int) -> np.ndarray:
    """Mean score per lr for each row of (B, m) arrays; nan where an lr has no row."""
    onehot = lr_index[..., None] == np.arange(n_lrs)  # (B, m, J)
    count = onehot.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(count > 0, (score[..., None] * onehot).sum(axis=-2) / count, np.nan)


def lr_optima(n: np.ndarray, lr: np.ndarray, score: np.ndarray, *,
              maximize: bool = True) -> LrOptima:
    """Each size's optimal learning rate: the score is averaged per lr (over seeds), then
    interpolated around the best lr by a quadratic in log lr (see `optimal_log_lr`)."""
    n, lr, score = (np.asarray(v, dtype=float) for v in (n, lr, score))
    sign = 1.0 if maximize else -1.0
    sizes = np.unique(n)
    optima, edges = np.empty(len(sizes)), np.zeros(len(sizes), dtype=bool)
    for i, size in enumerate(sizes):
        rows = n == size
        lrs, lr_index = np.unique(lr[rows], return_inverse=True)
        mean = _mean_by_lr(lr_index[None, :], sign * score[rows][None, :], len(lrs))
        opt, edge = optimal_log_lr(np.log(lrs), mean)
        optima[i], edges[i] = opt[0], edge[0]
    return LrOptima(sizes, np.exp(optima), edges)


@dataclass(frozen=True)
class LrLaw(Form):
    """lr*(N) = C * N^-gamma, fitted by least squares in log-log on each size's optimum.

    The points are trials (n, lr, y = the score to maximize, or a loss with maximize=False).
    The bootstrap resamples trials within each size, so every size keeps an optimum."""

    maximize: bool = True

    name: ClassVar[str] = "lr_law"
    param_names: ClassVar[tuple[str, ...]] = ("C", "gamma")
    resample_within_size: ClassVar[bool] = True
    predicts_metric: ClassVar[bool] = False

    def observed(self, points: Points) -> Points:
        points.require(self.name, "lr")
        optima = lr_optima(points.n, points.lr, points.y, maximize=self.maximize)
        return Points(optima.n, optima.lr)

    def estimate(self, observed: Points, init: np.ndarray | None = None) -> np.ndarray:
        return self._log_log_fit(np.log(observed.n)[None, :], np.log(observed.y)[None, :])[0]

    def estimate_batch(self, points: Points, index: np.ndarray) -> np.ndarray:
        points.require(self.name, "lr")
        sign = 1.0 if self.maximize else -1.0
        sizes, counts = np.unique(points.n, return_counts=True)
        lrs, lr_index = np.unique(points.lr, return_inverse=True)
        # resample_indices puts each size's draws in its own block of columns, in this order.
        bounds = np.concatenate([[0], np.cumsum(counts)])
        log_opt = np.empty((len(index), len(sizes)))
        for i in range(len(sizes)):
            block = index[:, bounds[i] : bounds[i + 1]]
            mean = _mean_by_lr(lr_index[block], sign * points.y[block], len(lrs))
            log_opt[:, i] = optimal_log_lr(np.log(lrs), mean)[0]
        return self._log_log_fit(np.broadcast_to(np.log(sizes), log_opt.shape), log_opt)

    @staticmethod
    def _log_log_fit(log_n: np.ndarray, log_lr: np.ndarray) -> np.ndarray:
        """Least-squares line per row: log lr = log C - gamma log N. Returns (B, 2)."""
        xc = log_n - log_n.mean(axis=1, keepdims=True)
        slope = (xc * (log_lr - log_lr.mean(axis=1, keepdims=True))).sum(1) / (xc**2).sum(1)
        intercept = log_lr.mean(axis=1) - slope * log_n.mean(axis=1)
        return np.stack([np.exp(intercept), -slope], axis=1)

    def predict(self, theta: np.ndarray, points: Points) -> np.ndarray:
        c, gamma = theta
        return c * points.n**-gamma


FORMS: dict[str, type] = {f.name: f for f in (PowerLaw, Chinchilla, TwoStep, Bounded, LrLaw)}
