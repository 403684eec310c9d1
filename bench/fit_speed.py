"""Time the Chinchilla approach-3 fit on Epoch AI's 240 points, against the gradient-free way.

    python bench/fit_speed.py [--data DIR] [--every 100] [--full-grid]

The fast fit (`raysweep.analysis.scaling.Chinchilla`): the Huber objective is evaluated at all 4500 grid
starts in one vectorized pass, and L-BFGS-B with the analytic gradient polishes the best 100.
The gradient-free way: L-BFGS-B with finite-difference gradients from every grid start (631 s
here when it was run in full). The bench runs it on every `--every`-th start only and scales
the time up to the full grid, so the ratio is measured in the same run. `--full-grid` also runs
the analytic gradient from every start (Epoch's procedure, exactly).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from raysweep.analysis import scaling

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EPOCH = {"E": (1.817, 0.026), "alpha": (0.348, 0.015), "beta": (0.366, 0.021),
         "A": (482.0, 124.5), "B": (2085.4, 1293.4)}


def load_points(data_dir: Path) -> scaling.Points:
    """Epoch's rule: D = C / 6N; drop the 5 highest losses (keep a loss below the 5th highest)."""
    with open(data_dir / "chinchilla_fig4_points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    flops = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]
    return scaling.Points(n[keep], loss[keep], d=flops[keep] / (6 * n[keep]))


def gradient_free(points: scaling.Points, starts: np.ndarray, delta: float) -> np.ndarray:
    """L-BFGS-B with finite differences (no jac) from each start; the best, in natural units."""
    args = (np.log(points.n), np.log(points.d), np.log(points.y), delta)

    def value(x):
        a, b, e, alpha, beta = x
        terms = np.stack([a - alpha * args[0], b - beta * args[1], np.full_like(args[0], e)])
        top = terms.max(axis=0)
        log_pred = top + np.log(np.exp(terms - top).sum(axis=0))
        return scaling.huber(log_pred - args[2], delta).sum()

    with scaling.single_threaded_blas():  # as the fast fit runs: a like-for-like ratio
        best = min((minimize(value, x0, method="L-BFGS-B", options=scaling.LBFGS_OPTIONS)
                    for x0 in starts), key=lambda r: r.fun)
    return scaling.natural_params(best.x)


def show(label: str, theta: np.ndarray, seconds: float) -> None:
    values = dict(zip(scaling.Chinchilla.param_names, theta))
    text = "  ".join(f"{k}={values[k]:.4g}" for k in ("E", "alpha", "beta", "A", "B"))
    print(f"{label:<44} {seconds:8.2f} s   {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--every", type=int, default=100,
                        help="run the gradient-free fit from every k-th grid start")
    parser.add_argument("--full-grid", action="store_true",
                        help="also run the analytic gradient from all 4500 starts")
    args = parser.parse_args()

    points = load_points(args.data)
    form = scaling.Chinchilla()
    grid = form.grid_starts()
    subsample = grid[:: args.every]
    print(f"{len(points)} points; grid of {len(grid)} starts; gradient-free on "
          f"{len(subsample)} of them (every {args.every}th)\n")

    t0 = time.perf_counter()
    fast = form.estimate(points)
    fast_s = time.perf_counter() - t0
    show(f"fast: analytic gradient, best {form.starts} starts", fast, fast_s)

    t0 = time.perf_counter()
    slow = gradient_free(points, subsample, form.delta)
    slow_s = time.perf_counter() - t0
    slow_full_s = slow_s * len(grid) / len(subsample)
    show(f"gradient-free, {len(subsample)} starts", slow, slow_s)
    print(f"{'  scaled to all ' + str(len(grid)) + ' starts':<44} {slow_full_s:8.2f} s")

    if args.full_grid:
        t0 = time.perf_counter()
        full = scaling.Chinchilla(starts=None).estimate(points)
        show(f"analytic gradient, all {len(grid)} starts", full, time.perf_counter() - t0)

    print(f"\nspeed-up of the fast fit over the full gradient-free grid: "
          f"{slow_full_s / fast_s:.0f}x (measured on {len(subsample)} starts, scaled)")
    names = scaling.Chinchilla.param_names
    same = all(round(fast[names.index(k)], 2) == round(slow[names.index(k)], 2)
               for k in ("E", "alpha", "beta"))
    print(f"E, alpha, beta equal to 2 decimals: {'yes' if same else 'NO'}")
    print("Epoch AI: " + "  ".join(f"{k}={v:.4g} (se {se:.3g})" for k, (v, se) in EPOCH.items()))
    within = all(abs(fast[names.index(k)] - EPOCH[k][0]) <= EPOCH[k][1]
                 for k in ("E", "alpha", "beta"))
    print(f"fast fit within one standard error of Epoch's E, alpha, beta: "
          f"{'yes' if within else 'NO'}")


if __name__ == "__main__":
    main()
