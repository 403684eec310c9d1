"""Predictions at a new model size, with prediction intervals (`raysweep predict`).

Each group's fit (`raysweep.analysis.fits.fit_groups`) gives the estimate at the new size; the
interval is `raysweep.analysis.scaling.interval` (bootstrap draws of the curve plus the residual
noise of one new model), widened by `scaling.widen` where the group's leave-largest-out
backtest fell outside its own interval. Everything is computed on the scale the form was fitted
on (e.g. 1 - accuracy) and mapped back to the metric for the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from raysweep.analysis import scaling
from raysweep.analysis.fits import (GroupFit, flags_text, holdout_coverage,
                                    resolve_group_columns)
from raysweep.analysis.points import InputError, PointTable, group_rows

# The forms whose curve is in (N, D): a prediction needs the tokens D as well.
TOKEN_FORMS = ("chinchilla", "two_step")


@dataclass(frozen=True)
class Prediction:
    group: GroupFit
    tokens: float | None
    forecast: scaling.Forecast  # on the fitted scale (`group.target`)

    @property
    def value(self) -> float:
        """The estimate in the metric's units, inside the metric's range (`clipped`)."""
        t = self.group.transform
        return t.value(t.clip(self.forecast.pred, self.forecast.pred)[0])

    @property
    def clipped(self) -> bool:
        """The curve itself leaves the metric's range at this size (e.g. above the ceiling)."""
        t = self.group.transform
        return not t.y_min <= self.forecast.pred <= t.y_max

    @property
    def interval(self) -> tuple[float, float]:
        return self.group.transform.value_interval(self.forecast.lo, self.forecast.hi)

    @property
    def raw_interval(self) -> tuple[float, float]:
        return self.group.transform.value_interval(self.forecast.raw_lo, self.forecast.raw_hi)


def check_request(points: PointTable, by: Sequence[str] | None, form: str, n_params: float,
                  tokens: float | None, allow_interpolation: bool) -> None:
    """Bad requests, before anything is fitted: a form that predicts no metric, (N, D) forms
    without --tokens, and sizes not beyond every group's largest fitted size unless
    interpolation is allowed (the widening rule and the point of a forecast are about sizes
    not yet trained)."""
    if form == "lr_law":
        raise InputError("form 'lr_law' predicts a learning rate, not the metric; use "
                         "`raysweep fit --form lr_law` for it, and --form power_law here")
    if not n_params > 0:
        raise InputError(f"--n-params must be a positive number of parameters; got {n_params:g}")
    if form in TOKEN_FORMS and tokens is None:
        raise InputError(f"form {form!r} predicts from model size and training tokens: "
                         "pass --tokens D as well as --n-params")
    if allow_interpolation:
        return
    columns = resolve_group_columns(points, by)
    for key, rows in group_rows(points.table.to_pylist(), columns).items():
        sizes = [r["n_params"] for r in rows if r.get("value") is not None]
        if not sizes:
            continue
        label = ", ".join(f"{k}={v}" for k, v in zip(columns, key)) or "all"
        low, high = min(sizes), max(sizes)
        if n_params < low:
            where = f"below the smallest fitted size ({low:.4g})"
        elif n_params <= high:
            where = f"within the fitted sizes ({low:.4g} to {high:.4g})"
        else:
            continue
        raise InputError(f"{points.source}: --n-params {n_params:.4g} is {where} of group "
                         f"{label}; predict extrapolates to larger models; pass "
                         "--allow-interpolation to predict there anyway")


def predict(fits: Sequence[GroupFit], n_params: float, tokens: float | None = None,
            seed: int = 0) -> list[Prediction]:
    """Each fit's forecast at (n_params, tokens): the estimate, its prediction interval, and
    the interval before the backtest rule."""
    n = np.array([float(n_params)])
    d = None if tokens is None else np.array([float(tokens)])
    out = []
    for f in fits:
        needs_d = f.fit.name in TOKEN_FORMS
        pred, lo, hi = scaling.interval(f.fit, n, d if needs_d else None, seed=seed)
        out.append(Prediction(f, tokens if needs_d else None,
                              scaling.widen(pred, lo, hi, float(n_params), f.backtest)))
    return out


def interval_notes(predictions: Sequence[Prediction]) -> list[str]:
    """Why a prediction has no interval, or sits on the edge of the metric's range."""
    notes = [f"{p.group.label}: no interval: {p.group.fit.n_points} points for "
             f"{len(p.group.fit.params)} parameters leave no residual to measure the error by "
             "(or --n-boot drew no usable resample); add a size"
             for p in predictions if not np.isfinite(p.forecast.lo)]
    notes += [f"{p.group.label}: the fitted curve leaves the metric's range at this size "
              f"({p.group.transform.value(p.forecast.pred):.4g}); shown at the edge"
              for p in predictions if p.clipped]
    return notes


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def _backtest_json(f: GroupFit) -> dict[str, Any] | None:
    """The evidence the widening looked at: the raw interval at the largest fitted size from
    the smaller ones, in the metric's units."""
    b = f.backtest
    if b is None:
        return None
    lo, hi = f.transform.value_interval(b.lo, b.hi)
    return {"n_params": b.n_params, "n_prev": b.n_prev, "pred": f.transform.value(b.pred),
            "lo": _finite(lo), "hi": _finite(hi), "true": f.transform.value(b.true),
            "covered": b.covered}


def as_json(predictions: Sequence[Prediction], *, source: str, n_params: float,
            level: float) -> dict[str, Any]:
    """The `--json` output: one entry per group, and the holdout coverage over the groups."""
    groups = []
    for p in predictions:
        f, lo, hi = p.group, *p.interval
        raw_lo, raw_hi = p.raw_interval
        h = f.holdout_interval
        holdout = None
        if h is not None and f.backtest is not None:
            h_lo, h_hi = f.transform.value_interval(h.lo, h.hi)
            holdout = {"n_params": f.backtest.n_params, "pred": f.transform.value(h.pred),
                       "lo": _finite(h_lo), "hi": _finite(h_hi),
                       "true": f.transform.value(f.backtest.true),
                       "abs_err": abs(h.pred - f.backtest.true) * f.transform.scale,
                       "covered": f.holdout_covered}
        groups.append({
            "group": {k: None if v is None else str(v) for k, v in f.keys},
            "metric": f.metric, "form": f.fit.name, "target": f.target,
            "direction": None if f.direction is None else f.direction.way,
            "pred": p.value, "lo": _finite(lo), "hi": _finite(hi),
            "raw_lo": _finite(raw_lo), "raw_hi": _finite(raw_hi),
            "widened_by": p.forecast.widen * f.transform.scale,
            "tokens": p.tokens, "fit_flags": list(f.fit.flags),
            "params": {q.name: q.value for q in f.fit.params},
            "backtest": _backtest_json(f),
            "holdout": holdout,
        })
    covered, total = holdout_coverage([p.group for p in predictions])
    return {"source": source, "n_params": n_params, "level": level, "predictions": groups,
            "holdout_coverage": {"covered": covered, "fits": total,
                                 "rate": covered / total if total else None}}


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.4g}"


def predictions_table(predictions: Sequence[Prediction], n_params: float, level: float):
    """A rich table: group, form, the prediction with its interval (and why it was widened),
    the holdout check, and any estimate on a bound."""
    from rich.table import Table

    table = Table(title=f"predicted at N = {n_params:.4g}", show_lines=True)
    for column in ("group", "form\n(fitted)", f"prediction [{level:.0%} PI]",
                   "largest size from the smaller:\npred [PI] vs true", "flags"):
        table.add_column(column)
    for p in predictions:
        f, (lo, hi) = p.group, p.interval
        cell = f"{_fmt(p.value)} \\[{_fmt(lo)}, {_fmt(hi)}]"  # \\[: not rich markup
        if p.forecast.widen > 0:
            raw_lo, raw_hi = p.raw_interval
            cell += (f"\nwidened from \\[{_fmt(raw_lo)}, {_fmt(raw_hi)}]: the backtest "
                     "missed its interval")
        h, back = f.holdout_interval, f.backtest
        holdout = "-"
        if h is not None and back is not None:
            h_lo, h_hi = f.transform.value_interval(h.lo, h.hi)
            verdict = {True: "inside", False: "[red]outside[/]",
                       None: "no interval: as many parameters as sizes"}[f.holdout_covered]
            holdout = (f"N={back.n_params:.3g}: {_fmt(f.transform.value(h.pred))} "
                       f"\\[{_fmt(h_lo)}, {_fmt(h_hi)}]\nvs "
                       f"{_fmt(f.transform.value(back.true))} ({verdict})")
        flags = f"[red]{flags_text(f)}[/]" if f.fit.flags else ""
        table.add_row(f.label.replace(", ", "\n"), f"{f.fit.name}\n({f.target})", cell,
                      holdout, flags)
    return table
