"""The fits in raysweep.analysis.scaling: known parameters are recovered within their bootstrap
intervals, gradients match finite differences, and Epoch AI's Chinchilla fit is reproduced."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import approx_fprime

from raysweep.analysis import scaling
from raysweep.analysis.scaling import Points

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHINCHILLA_CSV = DATA / "chinchilla_fig4_points.csv"


def assert_recovered(fit: scaling.Fit, truth: dict[str, float]) -> None:
    for name, value in truth.items():
        p = fit.param(name)
        assert p.lo <= value <= p.hi, f"{fit.name}: {name}={value} outside {p}"
        assert p.lo <= p.value <= p.hi, f"{fit.name}: estimate outside its own interval: {p}"


def chinchilla_grid(rng: np.random.Generator, truth: dict[str, float], noise: float) -> Points:
    """6 sizes x 5 token counts; multiplicative noise on the loss."""
    n, d = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 3e9, 6), np.geomspace(1e9, 1e11, 5)))
    theta = np.array([truth[k] for k in scaling.Chinchilla.param_names])
    loss = scaling.Chinchilla().predict(theta, Points(n, n, d=d))
    return Points(n, loss * np.exp(rng.normal(0, noise, n.size)), d=d)


# --- recovery of known parameters ---------------------------------------------------------------


def test_power_law_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth = {"E": 0.2, "A": 300.0, "alpha": 0.35}
    n = np.repeat(np.geomspace(1e7, 1e10, 8), 3)  # 8 sizes x 3 seeds
    y = truth["E"] + truth["A"] * n ** -truth["alpha"] + rng.normal(0, 0.003, n.size)
    fit = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=1000, seed=1)
    assert_recovered(fit, truth)
    assert len(fit.boot) == 1000 and fit.n_points == 24 and fit.n_sizes == 8
    np.testing.assert_allclose(fit.residuals, y - fit.predict(n))


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
    chance = 1 / 3
    truth = {"ceiling": 0.9, "alpha": 0.8, "log10_n0": 8.5}
    n = np.repeat(np.geomspace(1e7, 1e10, 8), 3)
    theta = np.array(list(truth.values()))
    y = scaling.bounded_accuracy(theta, n, chance) + rng.normal(0, 0.01, n.size)
    fit = scaling.fit(scaling.Bounded(chance=chance), Points(n, y), n_boot=300, seed=0)
    assert_recovered(fit, truth)
    far = fit.predict(np.array([1.0, 1e30]))
    assert chance <= far[0] < far[1] <= 1.0


def test_chinchilla_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28}
    points = chinchilla_grid(rng, truth, noise=0.01)
    fit = scaling.fit(scaling.Chinchilla(starts=10), points, n_boot=150, seed=0)
    assert_recovered(fit, truth)
    assert fit.holdout.n_points == 5  # the largest N at each of its 5 token counts
    assert fit.holdout.rel_err < 0.03


def test_two_step_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth = {"E": 1.7, "A": 400.0, "alpha": 0.34, "B": 410.0, "beta": 0.28,
             "a": 2.4, "k": -4.0, "L0": 2.2, "b": 0.25}
    losses = chinchilla_grid(rng, truth, noise=0.01)
    step2 = np.array([truth[k] for k in ("a", "k", "L0", "b")])
    acc = scaling.sigmoid_accuracy(step2, losses.y) + rng.normal(0, 0.01, len(losses))
    points = Points(losses.n, acc, d=losses.d, loss=losses.y)
    fit = scaling.fit(scaling.TwoStep(scaling.Chinchilla(starts=10)), points, n_boot=100)
    assert_recovered(fit, truth)
    # Predictions chain both steps from (N, D) alone.
    chained = scaling.sigmoid_accuracy(fit.values[5:], fit.form.predict_loss(fit.values, points))
    np.testing.assert_allclose(fit.predict(points.n, points.d), chained)


def test_lr_law_recovers_known_parameters():
    rng = np.random.default_rng(0)
    truth = {"C": 3e-5 * 1e8**0.3, "gamma": 0.3}
    n, lr, _ = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e9, 6),
                                               np.geomspace(1e-5, 3e-4, 6), [0, 1]))
    best = truth["C"] * n ** -truth["gamma"]
    score = 0.8 - 0.05 * np.log(lr / best) ** 2 + rng.normal(0, 0.005, n.size)
    fit = scaling.fit(scaling.LrLaw(), Points(n, score, lr=lr), n_boot=500)
    assert_recovered(fit, truth)
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


def test_bootstrap_is_seeded_and_bands_cover_the_fit():
    rng = np.random.default_rng(5)
    n = np.repeat(np.geomspace(1e7, 1e9, 5), 2)
    y = 0.1 + 20 * n**-0.3 + rng.normal(0, 0.005, n.size)
    a = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=200, seed=7)
    b = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=200, seed=7)
    c = scaling.fit(scaling.PowerLaw(), Points(n, y), n_boot=200, seed=8)
    assert a.params == b.params
    assert a.params != c.params
    grid = np.geomspace(1e7, 1e10, 20)
    lo, hi = a.band(grid)
    assert np.all(lo <= hi) and np.all(hi - lo > 0)
    assert np.mean((lo <= a.predict(grid)) & (a.predict(grid) <= hi)) > 0.9


def test_too_few_points_is_an_error_that_says_what_is_needed():
    n, y = np.array([1e7, 1e8, 1e8]), np.array([0.5, 0.4, 0.41])
    with pytest.raises(scaling.NotEnoughPoints, match=r"3 parameters .* 3 or more distinct "
                                                       r"sizes N; got 2"):
        scaling.fit(scaling.PowerLaw(), Points(n, y))
    with pytest.raises(scaling.NotEnoughPoints, match=r"\(N, D\) pairs; got 2"):
        scaling.fit(scaling.Chinchilla(), Points(n, y, d=np.array([1e9, 1e9, 1e9])))


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
