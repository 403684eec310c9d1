"""The fits in raysweep.analysis.scaling: known parameters of synthetic data are recovered within
what the noise allows, the bootstrap intervals are as wide as the noise makes them (and cover
the truth as often as they claim), gradients match finite differences, and Epoch AI's Chinchilla
fit is reproduced."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from raysweep.analysis import scaling
from raysweep.analysis.scaling import Points

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHINCHILLA_CSV = DATA / "chinchilla_fig4_points.csv"

# An estimate may sit this many standard errors from the truth. The standard errors below come
# from the noise the data was drawn with, not from the fit; at 4 a correct fit fails one time in
# ~16,000 per parameter, while a bias of a few standard errors (a wrong sign, a wrong scale, a
# lost data point) fails.
Z = 4.0
# The bootstrap's 95% interval may be this many times narrower or wider than the linearized
# one: with 24-30 points and strongly correlated parameters the two differ by up to ~3.5x here
# (the two-step form's `a`), but a zero-width interval (no resampling) or a runaway one is a bug.
WIDTH_FACTOR = 4.0
# The Chinchilla fit minimizes a Huber loss with delta 1e-3 on log residuals whose noise is 1e-2:
# nearly all residuals are in the linear part, so it estimates like least absolute deviations,
# whose variance under normal noise is pi/2 that of least squares.
HUBER_SE_FACTOR = np.sqrt(np.pi / 2)


def least_squares_se(model: Callable[[np.ndarray], np.ndarray], theta: np.ndarray,
                     sigma: float) -> np.ndarray:
    """Standard errors of least-squares estimates of `theta` under independent noise of sd
    `sigma` on each observation: sqrt(diag(sigma^2 (J'J)^-1)), J the Jacobian of `model` (the
    test's own formula for the noise-free observations) at the true parameters."""
    theta = np.asarray(theta, dtype=float)
    columns = []
    for i in range(len(theta)):
        h = 1e-6 * max(abs(theta[i]), 1e-3)
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        columns.append((model(up) - model(down)) / (2 * h))
    jac = np.stack(columns, axis=1)
    return sigma * np.sqrt(np.diag(np.linalg.inv(jac.T @ jac)))


def assert_recovered(fit: scaling.Fit, truth: dict[str, float], se: dict[str, float]) -> None:
    """Each estimate within Z standard errors of the truth, and each bootstrap interval about as
    wide as the noise makes it (see Z and WIDTH_FACTOR)."""
    for name, value in truth.items():
        p = fit.param(name)
        assert abs(p.value - value) <= Z * se[name], \
            f"{fit.name}: {name}={p.value:.5g}, truth {value:.5g}, se {se[name]:.3g}"
        ratio = (p.hi - p.lo) / (2 * 1.96 * se[name])
        assert 1 / WIDTH_FACTOR < ratio < WIDTH_FACTOR, \
            f"{fit.name}: {name} interval [{p.lo:.4g}, {p.hi:.4g}] is {ratio:.2f}x the noise's"


def chinchilla_grid(rng: np.random.Generator, truth: dict[str, float], noise: float) -> Points:
    """6 sizes x 5 token counts; multiplicative noise on the loss."""
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 6), np.geomspace(1e9, 1e11, 5)))
    theta = np.array([truth[k] for k in scaling.Chinchilla.param_names])
    loss = scaling.Chinchilla().predict(theta, Points(n, n, d=d))
    return Points(n, loss * np.exp(rng.normal(0, noise, n.size)), d=d)


def chinchilla_se(points: Points, truth: dict[str, float], noise: float) -> dict[str, float]:
    """The (N, D) law's standard errors, fitted in log space where the noise is additive."""
    def log_loss(t: np.ndarray) -> np.ndarray:
        e, a, alpha, b, beta = t
        return np.log(e + a * points.n**-alpha + b * points.d**-beta)

    names = scaling.Chinchilla.param_names
    se = least_squares_se(log_loss, np.array([truth[k] for k in names]), noise)
    return dict(zip(names, se * HUBER_SE_FACTOR))


def power_law_se(n: np.ndarray, truth: dict[str, float], noise: float) -> dict[str, float]:
    def law(t: np.ndarray) -> np.ndarray:
        return t[0] + t[1] * n ** -t[2]

    return dict(zip(("E", "A", "alpha"), least_squares_se(law, list(truth.values()), noise)))


# --- recovery of known parameters ---------------------------------------------------------------

POWER_TRUTH = {"E": 0.2, "A": 300.0, "alpha": 0.35}
POWER_NOISE = 0.003


def power_law_draw(rng: np.random.Generator, seeds: int = 3) -> Points:
    """8 sizes x `seeds` seeds of E + A N^-alpha plus normal noise."""
    n = np.repeat(np.geomspace(1e7, 1e10, 8), seeds)
    e, a, alpha = POWER_TRUTH.values()
    return Points(n, e + a * n**-alpha + rng.normal(0, POWER_NOISE, n.size))


def test_power_law_recovers_known_parameters():
    points = power_law_draw(np.random.default_rng(0))
    fit = scaling.fit(scaling.PowerLaw(), points, n_boot=1000, seed=1)
    # se(alpha) = 0.0023 here: the old tolerance of 0.1 was 40 standard errors wide.
    assert_recovered(fit, POWER_TRUTH, power_law_se(points.n, POWER_TRUTH, POWER_NOISE))
    assert len(fit.boot) == 1000 and fit.n_points == 24 and fit.n_sizes == 8
    np.testing.assert_allclose(fit.residuals, points.y - fit.predict(points.n))


def test_power_law_intervals_cover_the_truth_as_often_as_they_claim():
    """Over repeated draws the 95% intervals hold the true parameters about 95% of the time."""
    rng = np.random.default_rng(11)
    draws, truth = 40, np.array(list(POWER_TRUTH.values()))
    covered = np.zeros(3)
    for seed in range(draws):
        fit = scaling.fit(scaling.PowerLaw(), power_law_draw(rng), n_boot=200, seed=seed)
        covered += [p.lo <= t <= p.hi for p, t in zip(fit.params, truth)]
    # 120 intervals at a true rate of 0.95 (measured: 0.93-0.95 over 200 draws): below 0.85 is
    # more than four binomial standard deviations (0.02 each) short.
    assert covered.sum() / (3 * draws) >= 0.85, covered / draws


def test_power_law_intervals_shrink_with_more_data():
    """Four times the seeds per size: intervals about half as wide (1 / sqrt(4))."""
    def median_width(seeds: int) -> float:
        widths = []
        for seed in range(8):
            points = power_law_draw(np.random.default_rng(100 + seed), seeds)
            alpha = scaling.fit(scaling.PowerLaw(), points, n_boot=200, seed=seed).param("alpha")
            widths.append(alpha.hi - alpha.lo)
        return float(np.median(widths))

    ratio = median_width(8) / median_width(2)
    # Measured 0.48 over 20 draws each; the median of 8 widths varies by ~15%.
    assert 0.35 < ratio < 0.7, ratio


def test_power_law_is_exact_without_noise_and_holds_out_the_largest_size():
    n = np.geomspace(1e7, 1e10, 6)
    y = 0.3 + 50.0 * n**-0.25
    fit = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=0)
    np.testing.assert_allclose(fit.values, [0.3, 50.0, 0.25], rtol=1e-5)
    assert np.isnan(fit.param("alpha").lo)  # no bootstrap, no interval
    h = fit.holdout
    assert h.n_params == 1e10 and h.n_points == 1
    assert h.true == pytest.approx(y[-1])
    assert h.abs_err < 1e-6 and h.rel_err < 1e-5


def test_bounded_accuracy_recovers_known_parameters_and_stays_in_bounds():
    rng = np.random.default_rng(2)
    chance, noise = 1 / 3, 0.01
    truth = {"ceiling": 0.9, "alpha": 0.8, "log10_n0": 8.5}
    n = np.repeat(np.geomspace(1e7, 1e10, 8), 3)
    theta = np.array(list(truth.values()))
    y = scaling.bounded_accuracy(theta, n, chance) + rng.normal(0, noise, n.size)
    fit = scaling.fit(scaling.Bounded(chance=chance), Points(n, y), n_boot=300, seed=0)

    def law(t: np.ndarray) -> np.ndarray:
        return chance + (t[0] - chance) / (1 + (10 ** t[2] / n) ** t[1])

    assert_recovered(fit, truth, dict(zip(truth, least_squares_se(law, theta, noise))))
    # Far below N0 the curve is at chance; far above, at the fitted ceiling.
    far = fit.predict(np.array([1.0, 1e30]))
    assert far[0] == pytest.approx(chance, abs=1e-4)
    assert far[1] == pytest.approx(fit["ceiling"], abs=1e-9)


def test_chinchilla_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}
    points = chinchilla_grid(rng, truth, noise=0.01)
    fit = scaling.fit(scaling.Chinchilla(starts=10), points, n_boot=150, seed=0)
    assert_recovered(fit, truth, chinchilla_se(points, truth, 0.01))
    assert fit.holdout.n_points == 5  # the largest N at each of its 5 token counts
    assert fit.holdout.rel_err < 0.03


def test_two_step_recovers_known_parameters():
    rng = np.random.default_rng(0)
    noise = 0.01
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28,
             "a": 2.4, "k": -4.0, "L0": 2.2, "b": 0.25}
    losses = chinchilla_grid(rng, truth, noise=noise)
    step2 = np.array([truth[k] for k in ("a", "k", "L0", "b")])
    acc = scaling.sigmoid_accuracy(step2, losses.y) + rng.normal(0, noise, len(losses))
    points = Points(losses.n, acc, d=losses.d, loss=losses.y)
    fit = scaling.fit(scaling.TwoStep(scaling.Chinchilla(starts=10)), points, n_boot=100)

    def sigmoid(t: np.ndarray) -> np.ndarray:  # step 2 sees the observed losses, exactly
        a, k, l0, b = t
        return a / (1 + np.exp(-k * (losses.y - l0))) + b

    se = chinchilla_se(losses, truth, noise)
    se.update(zip(("a", "k", "L0", "b"), least_squares_se(sigmoid, step2, noise)))
    assert_recovered(fit, truth, se)
    # Predictions chain both steps from (N, D) alone.
    chained = scaling.sigmoid_accuracy(fit.values[5:], fit.form.predict_loss(fit.values, points))
    np.testing.assert_allclose(fit.predict(points.n, points.d), chained)


def lr_law_se(sizes: np.ndarray, lrs: np.ndarray, truth: dict[str, float], curvature: float,
              noise: float) -> dict[str, float]:
    """Standard errors of the lr law from the noise on the score: each size's optimum is the
    vertex of a parabola (in log lr) through the mean score at the best lr and its neighbours,
    whose standard error is least squares' for (top, curvature, vertex) on those three points;
    then log lr* = log C - gamma log N is a straight-line fit of the optima."""
    log_lrs, u = np.log(lrs), np.log(sizes)
    variances = []
    for size in sizes:
        vertex = np.log(truth["C"] * size ** -truth["gamma"])
        best = int(np.argmin(np.abs(log_lrs - vertex)))
        x = log_lrs[best - 1 : best + 2]
        se = least_squares_se(lambda t, x=x: t[0] - t[1] * (x - t[2]) ** 2,
                              np.array([0.0, curvature, vertex]), noise)
        variances.append(se[2] ** 2)
    slope = (u - u.mean()) / ((u - u.mean()) ** 2).sum()  # d slope / d optimum_i
    intercept = 1 / len(u) - u.mean() * slope  # d log C / d optimum_i
    return {"gamma": float(np.sqrt((slope**2 * variances).sum())),
            "log C": float(np.sqrt((intercept**2 * variances).sum()))}


def test_lr_law_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth, curvature, noise, seeds = {"C": 3e-5 * 1e8**0.3, "gamma": 0.3}, 0.05, 0.005, 2
    sizes, lrs = np.geomspace(1e7, 1e9, 6), np.geomspace(1e-5, 3e-4, 6)
    n, lr, _ = (a.ravel() for a in np.meshgrid(sizes, lrs, range(seeds)))
    best = truth["C"] * n ** -truth["gamma"]
    score = 0.8 - curvature * np.log(lr / best) ** 2 + rng.normal(0, noise, n.size)
    fit = scaling.fit(scaling.LrLaw(), Points(n, score, lr=lr), n_boot=500)
    # Each lr's mean over seeds is what the optimum is interpolated from.
    se = lr_law_se(sizes, lrs, truth, curvature, noise / np.sqrt(seeds))
    assert_recovered(fit, {"gamma": truth["gamma"]}, se)
    assert abs(np.log(fit["C"] / truth["C"])) <= Z * se["log C"], (fit["C"], se)
    assert fit.n_points == 6  # one optimum per size


def test_lr_optima_interpolate_a_quadratic_exactly_and_flag_edges():
    lrs = np.array([1e-5, 3e-5, 1e-4, 3e-4])
    n = np.repeat([1e8, 1e9], 4)
    lr = np.tile(lrs, 2)
    # Size 1e8: a parabola in log lr peaking at 5e-5 (inside). Size 1e9: best at the smallest lr.
    score = np.where(n == 1e8, 0.9 - 0.1 * np.log(lr / 5e-5) ** 2, -np.log(lr))
    optima = scaling.lr_optima(n, lr, score)
    assert optima.lr[0] == pytest.approx(5e-5, rel=1e-9)
    assert optima.lr[1] == pytest.approx(1e-5)
    assert optima.at_edge.tolist() == [False, True]
    # A loss is minimized: the same optimum from the negated score.
    assert scaling.lr_optima(n, lr, -score, maximize=False).lr[0] == pytest.approx(5e-5)


# --- gradients and Jacobians against finite differences ----------------------------------------


def test_chinchilla_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    log_n, log_d = np.log(np.geomspace(1e7, 1e10, 40)), np.log(np.geomspace(1e9, 1e12, 40))
    log_y = np.log(1.8 + 400 * np.exp(-0.34 * log_n) + 400 * np.exp(-0.28 * log_d))
    log_y = log_y + rng.normal(0, 0.02, 40)
    # Residuals on both sides of the Huber kink: delta between the small and large ones.
    for delta in (1e-3, 5e-2):
        for theta in ([6.0, 6.0, 0.6, 0.34, 0.28], [5.0, 8.0, 0.2, 0.5, 0.4], [0, 25, -1, 0, 2]):
            theta = np.asarray(theta, dtype=float)
            value, grad = scaling.chinchilla_objective(theta, log_n, log_d, log_y, delta)
            numeric = approx_fprime(
                theta, lambda t: scaling.chinchilla_objective(t, log_n, log_d, log_y, delta)[0],
                1e-7)
            np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-7)
            assert value == pytest.approx(scaling.huber(
                np.logaddexp.reduce([theta[0] - theta[3] * log_n, theta[1] - theta[4] * log_d,
                                     np.full(40, theta[2])]) - log_y, delta).sum())


@pytest.mark.parametrize("which", ["sigmoid", "bounded"])
def test_least_squares_jacobians_match_finite_differences(which):
    x = np.geomspace(1e7, 1e10, 12) if which == "bounded" else np.linspace(2.0, 4.0, 12)
    if which == "bounded":
        theta = np.array([0.85, 0.7, 8.3])
        f = lambda t: scaling.bounded_accuracy(t, x, 0.25)  # noqa: E731
        jac = scaling.bounded_accuracy_jacobian(theta, x, 0.25)
    else:
        theta = np.array([0.6, -3.0, 2.8, 0.2])
        f = lambda t: scaling.sigmoid_accuracy(t, x)  # noqa: E731
        jac = scaling.sigmoid_accuracy_jacobian(theta, x)
    numeric = np.stack([approx_fprime(theta, lambda t, i=i: f(t)[i], 1e-7)
                        for i in range(len(x))])
    np.testing.assert_allclose(jac, numeric, rtol=1e-4, atol=1e-7)


# --- the bootstrap, errors, results -------------------------------------------------------------


def test_bootstrap_is_seeded_and_bands_are_as_wide_as_the_noise():
    rng = np.random.default_rng(5)
    truth, noise = np.array([0.1, 20.0, 0.3]), 0.005
    n = np.repeat(np.geomspace(1e7, 1e9, 5), 2)
    y = truth[0] + truth[1] * n ** -truth[2] + rng.normal(0, noise, n.size)
    a = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=200, seed=7)
    b = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=200, seed=7)
    c = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=200, seed=8)
    assert a.params == b.params
    assert a.params != c.params

    def gradient(x: np.ndarray) -> np.ndarray:  # d prediction / d (E, A, alpha) at the truth
        _, amp, alpha = truth
        return np.stack([np.ones_like(x), x**-alpha, -amp * x**-alpha * np.log(x)], axis=1)

    # The prediction's standard error from the noise: sqrt(g' sigma^2 (J'J)^-1 g).
    cov = noise**2 * np.linalg.inv(gradient(n).T @ gradient(n))
    grid = np.geomspace(1e7, 1e10, 7)  # the data's sizes, then extrapolation to 10x the largest
    sd = np.sqrt(np.einsum("ij,jk,ik->i", gradient(grid), cov, gradient(grid)))
    lo, hi = a.band(grid)
    ratio = (hi - lo) / (2 * 1.96 * sd)
    assert np.all((1 / WIDTH_FACTOR < ratio) & (ratio < WIDTH_FACTOR)), ratio  # measured 0.7-2.6
    true_curve = truth[0] + truth[1] * grid ** -truth[2]
    assert np.all((lo <= true_curve) & (true_curve <= hi))
    width = hi - lo
    assert np.all(np.diff(width[grid >= 1e9]) > 0), width  # less certain further out


def test_too_few_points_is_an_error_that_says_what_is_needed():
    n, y = np.array([1e7, 1e8, 1e8]), np.array([0.5, 0.4, 0.41])
    with pytest.raises(scaling.NotEnoughPoints, match=r"3 parameters .* 3 or more distinct "
                                                       r"sizes N; got 2"):
        scaling.fit(scaling.PowerLaw(), Points(n, y))
    with pytest.raises(scaling.NotEnoughPoints, match=r"\(N, D\) pairs; got 2"):
        scaling.fit(scaling.Chinchilla(), Points(n, y, d=np.array([1e9, 1e9, 1e9])))


def test_estimates_on_a_bound_of_the_search_are_flagged():
    """A decreasing power law fitted to a rising quantity can only put A on its bound 0 (the
    curve is then the mean); a law with no offset puts E on 0; a sigmoid that saturates at 1
    puts the bounded form's ceiling on its upper bound. Fits inside their bounds carry none."""
    n = np.geomspace(1e7, 1e10, 6)
    falling = 0.2 + 50.0 * n**-0.3
    assert scaling.fit(scaling.PowerLaw(), Points(n, falling), n_boot=0).flags == ()
    rising = scaling.fit(scaling.PowerLaw(), Points(n, 1 - falling), n_boot=0)
    assert rising["A"] == 0.0 and "A at lower bound 0" in rising.flags
    no_offset = scaling.fit(scaling.PowerLaw(), Points(n, 50.0 * n**-0.3), n_boot=0)
    assert no_offset.flags == ("E at lower bound 0",)
    steep = scaling.fit(scaling.PowerLaw(max_alpha=0.2), Points(n, falling), n_boot=0)
    assert "alpha at upper bound 0.2" in steep.flags
    beyond = scaling.bounded_accuracy(np.array([1.2, 1.0, 9.5]), n, 0.25)  # heads past 1
    fit = scaling.fit(scaling.Bounded(chance=0.25), Points(n, beyond), n_boot=0)
    assert "ceiling at upper bound 1" in fit.flags, (fit.values, fit.flags)
    inside = scaling.bounded_accuracy(np.array([0.9, 1.0, 8.5]), n, 0.25)
    assert scaling.fit(scaling.Bounded(chance=0.25), Points(n, inside), n_boot=0).flags == ()


@pytest.mark.parametrize("form", ["power_law", "bounded", "chinchilla", "two_step", "lr_law"])
def test_curves_of_many_draws_at_once_match_one_draw_at_a_time(form):
    """`predict_draws` passes all bootstrap draws through a form's `predict` at once."""
    rng = np.random.default_rng(6)
    n, d = np.geomspace(1e7, 1e10, 5), np.geomspace(1e9, 1e11, 5)
    center = {"power_law": [0.2, 300.0, 0.35], "bounded": [0.9, 0.8, 8.5],
              "chinchilla": [1.7, 400.0, 0.34, 410.0, 0.28],
              "two_step": [1.7, 400.0, 0.34, 410.0, 0.28, 2.4, -4.0, 2.2, 0.25],
              "lr_law": [0.01, 0.3]}[form]
    draws = np.array(center) * rng.uniform(0.9, 1.1, (7, len(center)))
    f = scaling.Bounded(chance=0.25) if form == "bounded" else scaling.FORMS[form]()
    grid = Points(n, n, d=d)
    expected = np.array([f.predict(theta, grid) for theta in draws])
    np.testing.assert_allclose(scaling.predict_draws(f, draws, n, d), expected, rtol=1e-12)


def test_the_noise_of_a_prediction_counts_the_degrees_of_freedom():
    n = np.geomspace(1e7, 1e10, 5)
    y = 0.2 + 50.0 * n**-0.3 + np.array([0.01, -0.01, 0.01, -0.01, 0.0])
    fit = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=0)
    assert scaling.noise_sd(fit) == pytest.approx(np.sqrt(np.sum(fit.residuals**2) / 2))
    exact = scaling.fit(scaling.PowerLaw(), Points(n[:3], y[:3]), n_boot=0)
    assert scaling.noise_sd(exact) == 0.0  # 3 points, 3 parameters: no residual to learn from
    assert np.isnan(scaling.interval(fit, [1e11])[1])  # no bootstrap, no interval


def test_results_are_frozen():
    n = np.geomspace(1e7, 1e9, 4)
    fit = scaling.fit(scaling.PowerLaw(), Points(n, 0.2 + 10 * n**-0.3), n_boot=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.level = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.params[0].value = 1.0
    assert fit["alpha"] == fit.param("alpha").value


# --- a published fit: Chinchilla approach 3 as replicated by Epoch AI --------------------------


def load_chinchilla() -> Points:
    if not CHINCHILLA_CSV.exists():
        pytest.skip(f"{CHINCHILLA_CSV} is absent (CI clones the repo with shared/ beside it)")
    with open(CHINCHILLA_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    flops = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]  # Epoch's outlier rule: drop the 5 highest losses
    return Points(n[keep], loss[keep], d=flops[keep] / (6 * n[keep]))


# Epoch AI, "Chinchilla Scaling: A replication attempt" (2024): estimate, standard error.
EPOCH = {"E": (1.817, 0.026), "alpha": (0.348, 0.015), "beta": (0.366, 0.021),
         "A": (482.0, 124.5), "B": (2085.4, 1293.4)}


def test_chinchilla_published_fit_is_reproduced():
    points = load_chinchilla()
    assert len(points) == 240
    fit = scaling.fit(scaling.Chinchilla(), points, n_boot=100, seed=0)
    for name in ("E", "alpha", "beta"):
        value, se = EPOCH[name]
        assert abs(fit[name] - value) <= se, f"{name}={fit[name]:.4f}, Epoch {value} +- {se}"
    # The bootstrap's spread matches Epoch's standard errors (theirs: 4000 resamples).
    spread = dict(zip(scaling.Chinchilla.param_names, fit.boot.std(axis=0)))
    for name, (_, se) in EPOCH.items():
        assert se / 1.6 < spread[name] < se * 1.6, f"{name}: bootstrap sd {spread[name]:.4g}"
