"""Time the Chinchilla approach-3 fit on Epoch AI's 240 points: what the analytic gradient buys,
and what screening the grid of starts buys, each measured like for like.

    python bench/fit_speed.py [--data DIR] [--rounds 3]

The fast fit (`raysweep.analysis.scaling.Chinchilla`) does two things differently from Epoch's
procedure, and each is timed alone:

- gradient: L-BFGS-B from the SAME starts (the best 100 of the 4500-point grid), once with the
  analytic gradient and once with scipy's finite differences of the same Huber objective;
- screening: the objective is evaluated at all 4500 grid starts in one vectorized pass and only
  the best 100 are polished, against polishing all 4500 (both with the analytic gradient).

Each round times all four runs, in alternating order (ABBA), so that a machine getting busier or
quieter during the run does not favour one side; the spread over rounds is printed. The last
line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.optimize import minimize

from raysweep.analysis import scaling

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EPOCH = {"E": (1.817, 0.026), "alpha": (0.348, 0.015), "beta": (0.366, 0.021),
         "A": (482.0, 124.5), "B": (2085.4, 1293.4)}
COMPARED = ("E", "alpha", "beta")  # A and B are poorly determined (Epoch's se: 26%, 62%)


def load_points(data_dir: Path) -> scaling.Points:
    """Epoch's rule: D = C / 6N; drop the 5 highest losses (keep a loss below the 5th highest)."""
    with open(data_dir / "chinchilla_fig4_points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    flops = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]
    return scaling.Points(n[keep], loss[keep], d=flops[keep] / (6 * n[keep]))


def huber_loss(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_y: np.ndarray,
               delta: float) -> float:
    """The value of `scaling.chinchilla_objective` without its gradient: finite differences
    call only this, so they do not pay for a gradient they throw away."""
    a, b, e, alpha, beta = theta
    term_n, term_d = a - alpha * log_n, b - beta * log_d
    top = np.maximum(np.maximum(term_n, term_d), e)
    log_pred = top + np.log(np.exp(term_n - top) + np.exp(term_d - top) + np.exp(e - top))
    return float(scaling.huber(log_pred - log_y, delta).sum())


def polish(starts: np.ndarray, args: tuple, analytic: bool) -> np.ndarray:
    """L-BFGS-B from each start, as the fast fit runs it; the best, in natural units."""
    fun = scaling.chinchilla_objective if analytic else huber_loss
    with scaling.single_threaded_blas():
        best = min((minimize(fun, x0, args=args, jac=analytic, method="L-BFGS-B",
                             options=scaling.LBFGS_OPTIONS) for x0 in starts),
                   key=lambda r: r.fun)
    return scaling.natural_params(best.x)


def timed(run: Callable[[], np.ndarray]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    theta = run()
    return theta, time.perf_counter() - t0


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(float(np.median(values)), 2), "min": round(min(values), 2),
            "max": round(max(values), 2)}


def show(label: str, theta: np.ndarray) -> str:
    values = dict(zip(scaling.Chinchilla.param_names, theta))
    return f"{label:<40} " + "  ".join(f"{k}={values[k]:.4g}" for k in EPOCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (3 or more)")
    args = parser.parse_args()

    points = load_points(args.data)
    fast, full = scaling.Chinchilla(), scaling.Chinchilla(starts=None)
    logs = (np.log(points.n), np.log(points.d), np.log(points.y))
    screened = fast.screened_starts(*logs)
    objective_args = (*logs, fast.delta)
    print(f"{len(points)} points; grid of {len(fast.grid_starts())} starts, "
          f"{len(screened)} polished by the fast fit; {args.rounds} rounds, order alternating\n")

    runs = {  # name -> what it times
        "analytic": lambda: polish(screened, objective_args, analytic=True),
        "numeric": lambda: polish(screened, objective_args, analytic=False),
        "screened": lambda: fast.estimate(points),  # screening pass + polish the best 100
        "all_starts": lambda: full.estimate(points),  # polish all 4500
    }
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    thetas: dict[str, np.ndarray] = {}
    print(f"{'round':<6}" + "".join(f"{name:>12}" for name in runs) + "   (seconds)")
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            thetas[name], s = timed(runs[name])
            seconds[name].append(s)
        print(f"{r + 1:<6}" + "".join(f"{seconds[name][-1]:>12.2f}" for name in runs)
              + f"   order: {', '.join(order)}")

    like_for_like = [n / a for n, a in zip(seconds["numeric"], seconds["analytic"])]
    screening = [f / s for f, s in zip(seconds["all_starts"], seconds["screened"])]
    names = scaling.Chinchilla.param_names
    params_equal = all(
        len({round(float(theta[names.index(k)]), 2) for theta in thetas.values()}) == 1
        for k in COMPARED)
    print()
    for name, theta in thetas.items():
        print(show(name, theta))
    print("Epoch AI: " + "  ".join(f"{k}={v:.4g} (se {se:.3g})" for k, (v, se) in EPOCH.items()))
    within = all(abs(thetas["screened"][names.index(k)] - EPOCH[k][0]) <= EPOCH[k][1]
                 for k in COMPARED)
    lfl, scr = spread(like_for_like), spread(screening)
    print(f"\nanalytic gradient vs finite differences, the same {len(screened)} starts: "
          f"{lfl['median']:.1f}x (min {lfl['min']:.1f}, max {lfl['max']:.1f})")
    print(f"screening 4500 starts down to {len(screened)} (analytic gradient both): "
          f"{scr['median']:.1f}x (min {scr['min']:.1f}, max {scr['max']:.1f})")
    print(f"together (product of medians): {lfl['median'] * scr['median']:.0f}x")
    print(f"E, alpha, beta equal to 2 decimals in all four runs: {'yes' if params_equal else 'NO'}")
    print(f"fast fit within one standard error of Epoch's E, alpha, beta: "
          f"{'yes' if within else 'NO'}")
    print(json.dumps({"like_for_like_speedup": lfl, "screening_speedup": scr,
                      "params_equal": params_equal, "rounds": args.rounds,
                      "starts": len(screened), "grid_starts": len(fast.grid_starts())}))


if __name__ == "__main__":
    main()
