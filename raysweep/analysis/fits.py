"""Fitting scaling laws per group of points, and the fits table (`fits.parquet`).

One form fitted to one group is a `GroupFit`; `fit_groups` fits every requested form to every
group; `fits_table` lays them out one row per group and form, and `write_table` writes it (or
the gains table) the way the sweep's own tables are written. The numerics live in
`raysweep.analysis.scaling`; the points come from `raysweep.analysis.points`; which way the
metric goes, and so what each form is fitted to, from `raysweep.analysis.direction`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from raysweep.analysis import scaling
from raysweep.analysis.direction import (FALLING, RISING, Direction, Target, ceiling_of,
                                         resolve_direction, target_for)
from raysweep.analysis.points import (SEARCHED_LRS, InputError, PointTable, best_of, group_rows,
                                      join_names)
from raysweep.results import tables as results
from raysweep.results.best import SPACE_FILE

DEFAULT_GROUP_KEYS = ("task", "language", "mixture")
SWEEP_DEFAULT_FORMS = ("power_law", "lr_law")
TABLE_DEFAULT_FORMS = ("power_law",)


@dataclass(frozen=True)
class GroupFit:
    """One form fitted to one group."""

    keys: tuple[tuple[str, Any], ...]  # (column, value) of the group
    metric: str | None
    transform: Target  # what y is ("1 - score", "score", "loss", "lr* (max score)"), as a map
    fit: scaling.Fit
    data: scaling.Points  # the points the form was fitted on, for plots
    direction: Direction | None = None
    # The leave-largest-out checks of the prediction interval: the evidence for widening
    # forecasts (`scaling.backtest`), and what the whole rule would have said of the largest
    # size from the smaller ones (`scaling.holdout_forecast`). None: no bootstrap asked for,
    # too few sizes, or the lr law.
    backtest: scaling.Backtest | None = None
    holdout_interval: scaling.Forecast | None = None

    @property
    def target(self) -> str:
        return self.transform.name

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.keys) or "all"

    @property
    def holdout_covered(self) -> bool | None:
        """Whether the largest size's truth fell inside `holdout_interval` (None: no interval)."""
        h = self.holdout_interval
        if h is None or self.backtest is None or not np.isfinite(h.lo):
            return None
        return bool(h.lo <= self.backtest.true <= h.hi)


def chance_level(task: str | None, metric: str | None) -> float:
    """Chance accuracy of a registered k-way task (1/k); 0 for other metrics and tasks."""
    if task is None or metric not in ("accuracy", "score", "acc"):
        return 0.0
    try:
        from raysweep.tasks import get_task

        spec = get_task(task)
    except (KeyError, ImportError):
        return 0.0
    if spec.metric == "accuracy" and spec.num_labels:
        return 1.0 / spec.num_labels
    return 0.0


def make_form(name: str, *, maximize: bool, chance: float = 0.0) -> scaling.Form:
    if name not in scaling.FORMS:
        raise InputError(f"unknown form {name!r}; allowed: {', '.join(scaling.FORMS)}")
    if name == "lr_law":
        return scaling.LrLaw(maximize=maximize)
    if name == "bounded":
        return scaling.Bounded(chance=chance)
    return scaling.FORMS[name]()


def _arr(rows: list[dict], column: str) -> np.ndarray:
    return np.array([np.nan if r.get(column) is None else r[column] for r in rows], dtype=float)


def form_points(form: str, points: PointTable, all_rows: list[dict], best: list[dict],
                transform: Target) -> scaling.Points:
    """The `scaling.Points` a form is fitted on: y is `transform` of the value. Raises
    InputError when a column the form needs is missing. Rows with a missing or non-finite
    number (a diverged trial) are left out."""
    def need(rows: list[dict], column: str, why: str) -> np.ndarray:
        values = _arr(rows, column)
        if np.isnan(values).all():
            raise InputError(f"{points.source}: form {form!r} needs column {column!r} ({why}); "
                             f"it is missing or empty")
        return values

    n, y = _arr(best, "n_params"), transform.y(_arr(best, "value"))
    if form == "lr_law":
        why = "the learning rate of each trial"
        if points.kind == "sweep":  # the sweep's space.json says which one was swept
            why += (f"; from the sweep's {SPACE_FILE}: one of {', '.join(SEARCHED_LRS)} "
                    "searched over more than one value")
        lr = need(all_rows, "lr", why)
        data = scaling.Points(_arr(all_rows, "n_params"), _arr(all_rows, "value"), lr=lr)
    elif form in ("power_law", "bounded"):
        data = scaling.Points(n, y)
    elif form == "chinchilla":
        d = need(best, "tokens", "training tokens D, or flops for D = flops / 6N")
        data = scaling.Points(n, y, d=d)
    elif form == "two_step":
        d = need(best, "tokens", "training tokens D, or flops for D = flops / 6N")
        loss = need(best, "loss", "the task loss; in a sweep the final target-stage train loss")
        data = scaling.Points(n, y, d=d, loss=loss)
    else:
        raise InputError(f"unknown form {form!r}; allowed: {', '.join(scaling.FORMS)}")
    return _finite_rows(data)


def _finite_rows(data: scaling.Points) -> scaling.Points:
    columns = [c for c in (data.n, data.y, data.d, data.loss, data.lr) if c is not None]
    ok = np.logical_and.reduce([np.isfinite(c) for c in columns]) & (data.n > 0)
    return data.take(np.flatnonzero(ok))


def resolve_group_columns(points: PointTable, by: Sequence[str] | None) -> tuple[str, ...]:
    if by is None:
        return tuple(k for k in DEFAULT_GROUP_KEYS if k in points.group_columns)
    unknown = [k for k in by if k not in points.group_columns]
    if unknown:
        raise InputError(f"{points.source}: cannot group by {', '.join(map(repr, unknown))}; "
                         f"group columns allowed: {join_names(points.group_columns)}")
    taken = [k for k in by if k in _fits_table_columns()]
    if taken:
        raise InputError(f"{points.source}: cannot group by {', '.join(map(repr, taken))}: the "
                         f"fits table has a column of that name; rename it in the table")
    return tuple(by)


@dataclass(frozen=True)
class Fits:
    groups: tuple[GroupFit, ...]
    skipped: tuple[str, ...]  # groups a form did not apply to, and why


def fit_groups(points: PointTable, *, forms: Sequence[str] | None = None,
               by: Sequence[str] | None = None, chance: float | None = None,
               n_boot: int = 1000, level: float = 0.95, seed: int = 0,
               direction: str | None = None, ceiling: float | None = None,
               intervals: bool = True) -> Fits:
    """Fit every form to every group, in the metric's direction (`direction` overrides the
    metric's name and the data's trend; `ceiling` the metric's ceiling; see
    `raysweep.analysis.direction`). With `intervals` (and n_boot > 0) each fit also gets its
    leave-largest-out checks of the prediction interval (`scaling.backtest`,
    `scaling.holdout_forecast`: two more bootstrapped fits). Raises InputError where a group
    has too few points, a form's column is missing everywhere, the direction is unclear, or a
    form cannot describe it; a two-step form skips groups without a task loss (aggregates such
    as xtreme_r have none) and says so in `skipped`."""
    by = resolve_group_columns(points, by)
    if forms is None:
        forms = SWEEP_DEFAULT_FORMS if points.kind == "sweep" else TABLE_DEFAULT_FORMS
        if points.lr_column is None:
            forms = tuple(f for f in forms if f != "lr_law")
    for name in forms:
        if name not in scaling.FORMS:
            raise InputError(f"unknown form {name!r}; allowed: {', '.join(scaling.FORMS)}")

    groups = [(tuple(zip(by, key)), rows, best_of(points, rows, by))
              for key, rows in group_rows(points.table.to_pylist(), by).items()]
    way = _direction(points, direction, [best for _, _, best in groups])
    metric = points.metric or "value"
    top = None
    if way.way == RISING and any(f != "lr_law" for f in forms):
        top = ceiling_of(np.concatenate([_arr(best, "value") for _, _, best in groups]),
                         ceiling, metric, str(points.source))
    fits, skipped = [], []
    for keys, rows, best in groups:
        label = ", ".join(f"{k}={v}" for k, v in keys) or "all"
        task = dict(keys).get("task")
        for name in forms:
            transform = target_for(name, way, metric, top, str(points.source))
            group_chance = chance
            if name == "bounded" and chance is None:  # the task registry is slow to import
                group_chance = chance_level(task, points.metric)
            form = make_form(name, maximize=way.way == RISING, chance=group_chance or 0.0)
            if name == "two_step" and all(r.get("loss") is None for r in best):
                skipped.append(f"{label}: two_step skipped, no task loss")
                continue
            data = form_points(name, points, rows, best, transform)
            try:
                result = scaling.fit(form, data, n_boot=n_boot, level=level, seed=seed)
            except scaling.NotEnoughPoints as err:
                columns = "n_params" + (", tokens" if name in ("chinchilla", "two_step") else "")
                raise InputError(f"{points.source}: group {label} (columns {columns}): {err}"
                                 ) from None
            back = holdout = None
            if intervals and n_boot > 0:
                back = scaling.backtest(form, data, n_boot=n_boot, level=level, seed=seed)
            if back is not None:
                holdout = scaling.holdout_forecast(form, data, back, n_boot=n_boot, level=level,
                                                   seed=seed)
            fits.append(GroupFit(keys, points.metric, transform, result, data, way, back,
                                 holdout))
    if not fits:
        raise InputError(f"{points.source}: nothing to fit; {'; '.join(skipped)}")
    return Fits(tuple(fits), tuple(skipped))


def _direction(points: PointTable, requested: str | None,
               bests: list[list[dict]]) -> Direction:
    """The metric's direction over all groups. Where no group has two sizes the data cannot
    tell, and the fit's own message (too few sizes) is the one that helps."""
    groups = [(_arr(best, "n_params"), _arr(best, "value")) for best in bests]
    try:
        return resolve_direction(points.metric, requested, groups, str(points.source))
    except InputError:
        if max((len(np.unique(n)) for n, _ in groups), default=0) >= 2:
            raise
        return Direction(FALLING, "too few sizes to tell")


# --- the fits table ----------------------------------------------------------------------------

HOLDOUT_COLUMNS = ("holdout_n_params", "holdout_pred", "holdout_true", "holdout_abs_err",
                   "holdout_rel_err")
# The interval `raysweep predict` would have given for the largest size from the smaller ones
# (`GroupFit.holdout_interval`, on the scale of `target` like holdout_pred), and whether the
# largest size's truth fell inside it.
INTERVAL_COLUMNS = ("holdout_pred_lo", "holdout_pred_hi", "holdout_covered")
FIT_COLUMNS = ("metric", "form", "target", "direction", "n_points", "n_sizes", "rmse", "n_boot",
               "ci_level", "fit_flags")
TRAILING_COLUMNS = ("chance", "source")


def _fits_table_columns() -> set[str]:
    """Every column name the fits table may use besides the group keys."""
    params = {f"{p}{suffix}" for form in scaling.FORMS.values() for p in form.param_names
              for suffix in ("", "_lo", "_hi")}
    return (params | set(FIT_COLUMNS) | set(HOLDOUT_COLUMNS) | set(INTERVAL_COLUMNS)
            | set(TRAILING_COLUMNS))


def flags_text(fit: GroupFit) -> str:
    """The fit_flags column: "; "-joined, "" for a fit inside its bounds."""
    return "; ".join(fit.fit.flags)


def holdout_coverage(fits: Sequence[GroupFit]) -> tuple[int, int]:
    """(fits whose largest size fell inside its holdout interval, fits with such an interval)."""
    checked = [f.holdout_covered for f in fits if f.holdout_covered is not None]
    return sum(checked), len(checked)


def fits_table(fits: Sequence[GroupFit], source: str | Path = "") -> pa.Table:
    """One row per group and form: group keys, form, the direction it was fitted in, counts,
    `fit_flags` (estimates on a bound), each parameter with its interval (`<p>`, `<p>_lo`,
    `<p>_hi`), the leave-largest-out columns and the holdout prediction interval."""
    key_columns = list(dict.fromkeys(k for f in fits for k, _ in f.keys))
    param_columns = list(dict.fromkeys(p.name for f in fits for p in f.fit.params))
    types = {"metric": pa.string(), "form": pa.string(), "target": pa.string(),
             "direction": pa.string(), "n_points": pa.int64(), "n_sizes": pa.int64(),
             "rmse": pa.float64(), "n_boot": pa.int64(), "ci_level": pa.float64(),
             "fit_flags": pa.string()}
    fields = [pa.field(k, pa.string()) for k in key_columns]
    fields += [pa.field(c, types[c]) for c in FIT_COLUMNS]
    for p in param_columns:
        fields += [pa.field(p, pa.float64()), pa.field(f"{p}_lo", pa.float64()),
                   pa.field(f"{p}_hi", pa.float64())]
    fields += [pa.field(c, pa.float64()) for c in HOLDOUT_COLUMNS]
    fields += [pa.field("holdout_pred_lo", pa.float64()),
               pa.field("holdout_pred_hi", pa.float64()), pa.field("holdout_covered", pa.bool_())]
    fields += [pa.field("chance", pa.float64()), pa.field("source", pa.string())]

    rows = []
    for f in fits:
        row: dict[str, Any] = {k: None if v is None else str(v) for k, v in f.keys}
        row.update(metric=f.metric, form=f.fit.name, target=f.target,
                   direction=None if f.direction is None else f.direction.way,
                   n_points=f.fit.n_points, n_sizes=f.fit.n_sizes, rmse=f.fit.rmse,
                   n_boot=len(f.fit.boot), ci_level=f.fit.level, fit_flags=flags_text(f),
                   chance=getattr(f.fit.form, "chance", None), source=str(source))
        for p in f.fit.params:
            row.update({p.name: p.value, f"{p.name}_lo": p.lo, f"{p.name}_hi": p.hi})
        h = f.fit.holdout
        if h is not None:
            row.update(holdout_n_params=h.n_params, holdout_pred=h.pred, holdout_true=h.true,
                       holdout_abs_err=h.abs_err, holdout_rel_err=h.rel_err)
        if f.holdout_interval is not None:
            lo, hi = f.transform.clip(f.holdout_interval.lo, f.holdout_interval.hi)
            row.update(holdout_pred_lo=lo, holdout_pred_hi=hi, holdout_covered=f.holdout_covered)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def default_fits_path(points: PointTable) -> Path:
    if points.kind == "sweep":
        return points.source / "fits.parquet"
    return points.source.with_name(f"{points.source.stem}.fits.parquet")


def write_table(table: pa.Table, path: Path, what: str = "fits") -> Path:
    """Write the fits (or gains) table; a path that cannot be written is bad input."""
    try:
        # The same write-then-rename as the sweep's own tables: readers never see half a file.
        return results.atomic_write(table, path)
    except OSError as err:
        raise InputError(f"{path}: cannot write the {what} table ({err.strerror or err}); "
                         "pass --out PATH") from None
