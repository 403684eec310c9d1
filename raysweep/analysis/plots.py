"""Figures for sweep analysis, as PNG.

Figures are built on `matplotlib.figure.Figure` with an Agg canvas, not through pyplot: no global
figure state, no backend switch at import (a notebook keeps its inline backend and can `display`
these figures), and nothing leaks when many are drawn in a loop.

Plotting is kept apart from fitting (as marin does): each `plot_*` function takes what is
already computed (`raysweep.analysis.fits` fits, the gains table of `raysweep.analysis.gains`)
and returns a Figure, and nothing here fits or selects trials. `write_plots` draws the standard
set for `raysweep fit --plot`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pyarrow as pa
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from raysweep.analysis import scaling
from raysweep.analysis.fits import GroupFit
from raysweep.analysis.gains import (Curve, Matrix, gain_by_kind, gain_by_language, gain_matrix,
                                     headline_task)


class FittedSeries(Protocol):
    """What a scaling plot draws: a label, a fit, and the points it was fitted on
    (`raysweep.analysis.fits.GroupFit` is one)."""

    label: str
    target: str
    fit: scaling.Fit
    data: scaling.Points


def new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _size_grid(n: np.ndarray, extend: float = 3.0) -> np.ndarray:
    """Sizes from the smallest point to a little past the largest, to show extrapolation."""
    return np.geomspace(n.min() / 1.5, n.max() * extend, 200)


def _colors(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(count)]


def plot_scaling(series: Sequence[FittedSeries], *, title: str = "",
                 ylabel: str | None = None) -> Figure:
    """Metric against model size, one colour per series: the points, the fit, and the fit's
    bootstrap band, drawn a little past the largest size (the grey line) to show the
    extrapolation. Log N; log y for power laws whose values span more than a decade."""
    fig = new_figure()
    ax = fig.add_subplot()
    log_y = all(s.fit.name == "power_law" for s in series)
    for s, color in zip(series, _colors(len(series))):
        grid = _size_grid(s.data.n)
        fit = s.fit
        ax.scatter(s.data.n, s.data.y, color=color, s=18, alpha=0.8, zorder=3)
        label = s.label
        if "alpha" in (p.name for p in fit.params):
            a = fit.param("alpha")
            label += f"  (α={a.value:.3g} [{a.lo:.2g}, {a.hi:.2g}])"
        ax.plot(grid, fit.predict(grid), color=color, lw=1.6, label=label)
        lo, hi = fit.band(grid)
        if np.isfinite(lo).any():
            ax.fill_between(grid, lo, hi, color=color, alpha=0.18, lw=0)
        ax.axvline(s.data.n.max(), color="0.85", lw=0.8, zorder=0)
    ax.set_xscale("log")
    # Log y only where the values span more than a decade; within one, a log axis has no major
    # ticks and labels every minor tick in slow, hard-to-read mathtext.
    ys = np.concatenate([s.data.y for s in series]) if series else np.ones(1)
    if log_y and (ys > 0).all() and ys.max() > 10 * ys.min():
        ax.set_yscale("log")
    ax.set_xlabel("model size N (parameters)")
    ax.set_ylabel(ylabel or (series[0].target if series else ""))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def plot_parity(series: Sequence[FittedSeries], *, title: str = "") -> Figure:
    """Observed against predicted, for the (N, D) forms whose curves do not fit on one axis."""
    fig = new_figure(5.0, 4.6)
    ax = fig.add_subplot()
    lows, highs = [], []
    for s, color in zip(series, _colors(len(series))):
        pred = s.fit.form.predict(s.fit.values, s.data)
        ax.scatter(pred, s.data.y, color=color, s=14, alpha=0.8,
                   label=f"{s.label} (rmse {s.fit.rmse:.3g})")
        lows.append(min(pred.min(), s.data.y.min()))
        highs.append(max(pred.max(), s.data.y.max()))
    if lows:
        ax.plot([min(lows), max(highs)], [min(lows), max(highs)], color="0.5", lw=1, ls="--")
    ax.set_xlabel("predicted")
    ax.set_ylabel(f"observed {series[0].target if series else ''}")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return fig


def plot_lr_law(series: Sequence[FittedSeries], *, title: str = "") -> Figure:
    """Optimal learning rate against size: every trial (faint), each size's interpolated
    optimum (open markers where the optimum sits at the edge of the grid), the law and band."""
    fig = new_figure()
    ax = fig.add_subplot()
    for s, color in zip(series, _colors(len(series))):
        data, fit = s.data, s.fit
        maximize = getattr(fit.form, "maximize", True)
        optima = scaling.lr_optima(data.n, data.lr, data.y, maximize=maximize)
        ax.scatter(data.n, data.lr, color=color, s=8, alpha=0.25)
        inner = ~optima.at_edge
        ax.scatter(optima.n[inner], optima.lr[inner], color=color, s=36, zorder=3)
        ax.scatter(optima.n[~inner], optima.lr[~inner], facecolor="none", edgecolor=color, s=36,
                   zorder=3)
        grid = _size_grid(data.n)
        g = fit.param("gamma")
        ax.plot(grid, fit.predict(grid), color=color, lw=1.6,
                label=f"{s.label}  (γ={g.value:.3g} [{g.lo:.2g}, {g.hi:.2g}])")
        lo, hi = fit.band(grid)
        if np.isfinite(lo).any():
            ax.fill_between(grid, lo, hi, color=color, alpha=0.18, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size N (parameters)")
    ax.set_ylabel("optimal learning rate")
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def plot_gain_heatmap(matrix: Matrix, *, title: str = "",
                      scale: float = 100.0, unit: str = "points") -> Figure:
    """Gain from intermediate training per (intermediate mixture x target task), in points
    (x100), on a diverging scale centred at zero: the seed study's main figure."""
    values = matrix.values * scale
    fig = new_figure(max(5.0, 2.4 + 0.9 * len(matrix.columns)),
                     max(3.0, 1.6 + 0.5 * len(matrix.rows)))
    ax = fig.add_subplot()
    limit = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(len(matrix.columns)), matrix.columns, rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.rows)), matrix.rows)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8,
                    color="white" if abs(v) > 0.6 * limit else "black")
    fig.colorbar(image, ax=ax, label=f"gain ({unit})")
    ax.set_xlabel("target task")
    ax.set_ylabel("intermediate mixture")
    ax.set_title(title or f"gain from intermediate training, {matrix.title}")
    return fig


def plot_gain_by_kind(curves: Sequence[Curve], *, title: str = "",
                      scale: float = 100.0) -> Figure:
    """English vs multilingual intermediate gain per model size (mean +- standard error)."""
    fig = new_figure()
    ax = fig.add_subplot()
    for curve, color in zip(curves, _colors(len(curves))):
        order = np.argsort(curve.x)
        ax.errorbar(curve.x[order], curve.y[order] * scale, yerr=curve.err[order] * scale,
                    color=color, marker="o", capsize=3, label=curve.label)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("model size N (parameters)")
    ax.set_ylabel("gain over no intermediate training (points)")
    ax.set_title(title or "intermediate-training gain by mixture kind")
    ax.legend()
    ax.grid(True, alpha=0.3)
    return fig


def plot_gain_by_language(matrix: Matrix, *, title: str = "",
                          scale: float = 100.0) -> Figure:
    """Grouped bars: the gain per language, one bar per mixture kind."""
    fig = new_figure(max(4.0, 1.5 + 0.7 * len(matrix.columns)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(len(matrix.rows), 1)
    x = np.arange(len(matrix.columns))
    for i, (kind, color) in enumerate(zip(matrix.rows, _colors(len(matrix.rows)))):
        ax.bar(x + (i - (len(matrix.rows) - 1) / 2) * width, matrix.values[i] * scale, width,
               color=color, label=kind)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(x, matrix.columns)
    ax.set_xlabel("language")
    ax.set_ylabel("gain (points)")
    ax.set_title(title or f"intermediate-training gain by language, {matrix.title}")
    ax.legend()
    return fig


# --- the standard set -----------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "all"


def _panels(fits: Sequence[GroupFit]) -> dict[tuple, list[GroupFit]]:
    """One figure per form and group without its mixture: the mixtures are the series."""
    panels: dict[tuple, list[GroupFit]] = {}
    for f in fits:
        rest = tuple((k, v) for k, v in f.keys if k != "mixture")
        panels.setdefault((f.fit.name, rest), []).append(f)
    return panels


@dataclass(frozen=True)
class Series:
    """One line of a plot (a `FittedSeries`)."""

    label: str
    target: str
    fit: scaling.Fit
    data: scaling.Points

    @classmethod
    def of_mixture(cls, group: GroupFit) -> Series:
        """A group's fit, named by its mixture only (the panel's title has the other keys)."""
        mixture = dict(group.keys).get("mixture")
        label = f"mixture={mixture}" if mixture is not None else group.label
        return cls(label, group.target, group.fit, group.data)


def fit_figures(fits: Sequence[GroupFit]) -> dict[str, Figure]:
    """One figure per form and group without its mixture (the mixtures are the series), keyed
    by a file-name stem such as "power_law_task-xnli-language-all"."""
    figures = {}
    for (form, rest), groups in _panels(fits).items():
        title = ", ".join(f"{k}={v}" for k, v in rest) or "all"
        series = [Series.of_mixture(g) for g in groups]
        if form == "lr_law":
            fig = plot_lr_law(series, title=f"optimal lr: {title}")
        elif form in ("chinchilla", "two_step"):
            fig = plot_parity(series, title=f"{form}: {title}")
        else:
            fig = plot_scaling(series, title=f"{form}: {title}")
        figures[f"{form}_{_slug(title)}"] = fig
    return figures


def write_plots(fits: Sequence[GroupFit], out_dir: str | Path,
                gains: pa.Table | None = None) -> list[Path]:
    """Draw every fit (`fit_figures`) and, from a sweep's gains table (`gains.parquet`), the
    gain heat map, the gain per size by mixture kind, and the gain by language. Returns the
    paths."""
    out_dir = Path(out_dir)
    written = [save(fig, out_dir / f"{stem}.png") for stem, fig in fit_figures(fits).items()]
    if gains is None or gains.num_rows == 0:
        return written
    languages = set(gains["language"].to_pylist())
    if "all" in languages:
        written.append(save(plot_gain_heatmap(gain_matrix(gains)), out_dir / "gain_heatmap.png"))
        task = headline_task(gains["task"].to_pylist())
        written.append(save(plot_gain_by_kind(gain_by_kind(gains, task=task),
                                              title=f"gain by mixture kind, {task}"),
                            out_dir / "gain_by_kind.png"))
    if languages - {"all"}:
        written.append(save(plot_gain_by_language(gain_by_language(gains)),
                            out_dir / "gain_by_language.png"))
    return written
