"""From a sweep's tables (or a published results table) to fit inputs, fits, and the fits table.

The I/O half of `raysweep fit`; the numerics live in `raysweep.analysis.scaling`, the drawing in
`raysweep.analysis.plots`. Everything here is small tables: a sweep's metrics are filtered with pyarrow
first, then the few thousand rows that matter are handled as plain Python rows.

Conventions read from a sweep (see `raysweep.results.tables`):
- the fitted number is the last row (highest step) per (trial, stage, task, language, split,
  metric); with `all_steps` every step is a point (training curves for the (N, D) forms);
- the "best" trial per size is chosen by the English dev score of the same task
  (stage=eval, split=validation, language=en, metric=score), as XTREME's protocol does, falling
  back to the trial's `objective` (the search metric) where a task has no dev row;
- the gain from intermediate training is a trial's score minus that of the mixture="none"
  trial of the same model and seed, each the best over learning rates;
- N is `n_params`; D is `tokens`, or flops / (6 N) where tokens are missing.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raysweep.results import tables as results
from raysweep.analysis import scaling

DEFAULT_GROUP_KEYS = ("task", "language", "mixture")
SWEEP_DEFAULT_FORMS = ("power_law", "lr_law")
TABLE_DEFAULT_FORMS = ("power_law",)
LR_COLUMNS = ("lr_target", "lr_intermediate", "lr_pretrain")  # which one a sweep varies is found
TABLE_REQUIRED = ("n_params", "value")
TABLE_OPTIONAL = ("tokens", "flops", "loss", "lr", "metric")
# Metrics where higher is better, in [0, 1]: fitted as an error 1 - value by the power law.
HIGHER_IS_BETTER = ("score", "accuracy", "acc", "f1", "em", "exact_match")
HIGHER_IS_BETTER_PREFIXES = ("map@", "accuracy", "acc_", "ndcg", "recall@", "precision@")


class InputError(ValueError):
    """Bad input to `raysweep fit`. The message names the file, the column or key, and what is
    allowed; the CLI prints it and exits with status 2."""


def higher_is_better(metric: str | None) -> bool:
    if metric is None:
        return False
    m = metric.lower()
    return m in HIGHER_IS_BETTER or m.startswith(HIGHER_IS_BETTER_PREFIXES)


def _join(values: Iterable[Any]) -> str:
    values = sorted({str(v) for v in values})
    return ", ".join(values) if values else "(none)"


# --- reading: what to fit ----------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which rows become points. `metric` None: "score" for a sweep; for a table, its
    `metric` column's only value, or the values as they are."""

    metric: str | None = None
    stage: str = "eval"
    split: str = "test"
    languages: tuple[str, ...] | None = ("all",)  # None keeps every language
    all_steps: bool = False


@dataclass(frozen=True, eq=False)
class PointTable:
    """Fit inputs before grouping: one row per trial (sweep) or per published result (table),
    as a pyarrow table with n_params, tokens, value, select (what "best" maximizes), loss, lr
    and the group columns. `fit_groups` turns each group into `scaling.Points`."""

    table: pa.Table
    source: Path
    kind: str  # "sweep" | "table"
    metric: str | None
    group_columns: tuple[str, ...]  # the columns a user may group by
    lr_column: str | None = None  # the swept learning rate a sweep's `lr` comes from
    per_step: bool = False  # every step is a point (training curves), not just the last

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)

    def where(self, **equal: Any) -> PointTable:
        """The rows whose columns equal the given values, e.g. `points.where(task="xnli")`."""
        unknown = [c for c in equal if c not in self.table.column_names]
        if unknown:
            raise InputError(f"{self.source}: no column {', '.join(map(repr, unknown))}; "
                             f"columns: {', '.join(self.table.column_names)}")
        return replace(self, table=_filter(self.table, **equal))


def load_points(source: str | Path, selection: Selection | None = None) -> PointTable:
    """Read a sweep directory or a CSV / Parquet table."""
    source = Path(source)
    if source.is_dir():
        return load_sweep_points(source, selection or Selection())
    if source.suffix.lower() in (".csv", ".parquet", ".pq"):
        if not source.exists():
            raise InputError(f"{source}: no such file")
        metric = None if selection is None else selection.metric
        return load_table_points(source, metric)
    if not source.exists():
        raise InputError(f"{source}: no such sweep directory or table")
    raise InputError(f"{source}: not a sweep directory, .csv or .parquet file; "
                     "pass a sweep directory (with metrics/*.parquet) or a results table")


def load_sweep_points(sweep_dir: Path, selection: Selection) -> PointTable:
    if selection.metric is None:
        selection = replace(selection, metric="score")
    metrics_dir = sweep_dir / "metrics"
    metrics = results.load(sweep_dir, "metrics")
    if metrics.num_rows == 0:
        raise InputError(f"{metrics_dir}: no results (no Parquet files with rows); a sweep "
                         "directory needs metrics/*.parquet written by a sweep")
    trials = results.load(sweep_dir, "trials")
    metrics = _drop_unfinished(metrics, trials)
    if metrics.num_rows == 0:
        raise InputError(f"{sweep_dir / 'trials'}: no trial has status 'done' yet")

    rows = _filter(metrics, stage=selection.stage, split=selection.split)
    if rows.num_rows == 0:
        pairs = {f"{s}/{p}" for s, p in zip(metrics["stage"].to_pylist(),
                                             metrics["split"].to_pylist())}
        raise InputError(f"{metrics_dir}: no rows with stage={selection.stage!r} and "
                         f"split={selection.split!r}; stage/split present: {_join(pairs)}")
    present = set(rows["metric"].to_pylist())
    if selection.metric not in present:
        raise InputError(f"{metrics_dir}: column 'metric' has no {selection.metric!r} for "
                         f"stage={selection.stage!r}, split={selection.split!r}; "
                         f"allowed: {_join(present)}")
    rows = _filter(rows, metric=selection.metric)
    if selection.languages is not None:
        languages = set(rows["language"].to_pylist())
        missing = set(selection.languages) - languages
        if missing == set(selection.languages):
            raise InputError(f"{metrics_dir}: column 'language' has none of "
                             f"{_join(selection.languages)} for metric {selection.metric!r}; "
                             f"allowed: {_join(languages)}")
        rows = rows.filter(pc.is_in(rows["language"], pa.array(list(selection.languages))))

    lr_column = _swept_lr_column(rows)
    dev = _dev_scores(metrics)
    task_loss = _final_values(_filter(metrics, stage="target", split="train", metric="loss"),
                              ("trial_id", "task"))
    objective = _trial_objectives(trials)
    keep = ("trial_id", "stage", "task", "language", "split", "metric")
    key = keep + (("step",) if selection.all_steps else ())

    points = []
    for row in _last_step(rows.to_pylist(), key):
        n = row["n_params"]
        if n is None or row["value"] is None:
            continue
        fallback = row["value"] if higher_is_better(selection.metric) else -row["value"]
        select = dev.get((row["trial_id"], row["task"]),
                         objective.get(row["trial_id"], fallback))
        points.append({
            "trial_id": row["trial_id"], "model": row["model"], "n_params": n,
            "tokens": _tokens(row["tokens"], row["flops"], n), "step": row["step"],
            "seed": row["seed"], "mixture": row["mixture"], "mixture_kind": row["mixture_kind"],
            "lr": row[lr_column] if lr_column else None,
            "task": row["task"], "language": row["language"], "value": row["value"],
            "select": select, "loss": task_loss.get((row["trial_id"], row["task"])),
        })
    table = pa.Table.from_pylist(points, schema=SWEEP_POINTS_SCHEMA)
    return PointTable(table, sweep_dir, "sweep", selection.metric,
                  ("task", "language", "mixture", "mixture_kind", "model", "seed"), lr_column,
                  per_step=selection.all_steps)


SWEEP_POINTS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("model", pa.string()), ("n_params", pa.float64()),
    ("tokens", pa.float64()), ("step", pa.int64()), ("seed", pa.int64()),
    ("mixture", pa.string()), ("mixture_kind", pa.string()), ("lr", pa.float64()),
    ("task", pa.string()), ("language", pa.string()), ("value", pa.float64()),
    ("select", pa.float64()), ("loss", pa.float64()),
])


def _filter(table: pa.Table, **equal: str) -> pa.Table:
    mask = None
    for column, value in equal.items():
        m = pc.equal(table[column], value)
        mask = m if mask is None else pc.and_(mask, m)
    return table.filter(mask)


def _drop_unfinished(metrics: pa.Table, trials: pa.Table) -> pa.Table:
    """Rows of trials whose latest attempt did not finish are partial (a crash mid-eval); a
    sweep without a trials table yet is taken as it is."""
    if trials.num_rows == 0:
        return metrics
    unfinished = [t for t, s in zip(trials["trial_id"].to_pylist(), trials["status"].to_pylist())
                  if s != "done"]
    if not unfinished:
        return metrics
    return metrics.filter(pc.invert(pc.is_in(metrics["trial_id"], pa.array(unfinished))))


def _last_step(rows: list[dict], key: Sequence[str]) -> list[dict]:
    last: dict[tuple, dict] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in last or (row["step"] or 0) >= (last[k]["step"] or 0):
            last[k] = row
    return list(last.values())


def _final_values(table: pa.Table, key: Sequence[str]) -> dict[tuple, float]:
    return {tuple(r[c] for c in key): r["value"]
            for r in _last_step(table.to_pylist(), tuple(key) + ("stage", "language"))}


def _dev_scores(metrics: pa.Table) -> dict[tuple[str, str], float]:
    dev = _filter(metrics, stage="eval", split="validation", language="en", metric="score")
    return _final_values(dev, ("trial_id", "task"))


def _trial_objectives(trials: pa.Table) -> dict[str, float]:
    return {t: o for t, o in zip(trials["trial_id"].to_pylist(),
                                 trials["objective"].to_pylist()) if o is not None}


def _swept_lr_column(rows: pa.Table) -> str | None:
    """The learning rate the sweep varies: the lr column with the most distinct values (None
    when none varies: there is no optimum to find)."""
    counts = {c: len(set(rows[c].to_pylist()) - {None}) for c in LR_COLUMNS}
    best = max(LR_COLUMNS, key=lambda c: counts[c])
    return best if counts[best] > 1 else None


def _tokens(tokens: float | None, flops: float | None, n: float) -> float | None:
    if tokens is not None:
        return float(tokens)
    if flops is not None and n:
        return float(flops) / (6.0 * n)
    return None


def load_table_points(path: Path, metric: str | None) -> PointTable:
    """A published or hand-made results table: `n_params` and `value`, optionally `tokens` (or
    `flops`, D = flops / 6N), `loss` (two-step), `lr` (lr law), `metric`, and group columns."""
    try:
        if path.suffix.lower() == ".csv":
            table = pacsv.read_csv(path)
        else:
            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: cannot read the table: {err}") from None
    missing = [c for c in TABLE_REQUIRED if c not in table.column_names]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; a results table needs "
                         f"{', '.join(TABLE_REQUIRED)} (optional: {', '.join(TABLE_OPTIONAL)}, "
                         f"group columns); it has {', '.join(table.column_names)}")
    if "metric" in table.column_names:
        present = set(table["metric"].cast(pa.string()).to_pylist())
        if metric is None and len(present) == 1:
            metric = present.pop()
        elif metric is None or metric not in present:
            raise InputError(f"{path}: column 'metric' has "
                             f"{'several metrics' if metric is None else f'no {metric!r}'}; "
                             f"pass --metric, allowed: {_join(present)}")
        table = table.filter(pc.equal(table["metric"].cast(pa.string()), metric))

    for column in ("n_params", "value", "tokens", "flops", "loss", "lr"):
        if column in table.column_names:
            try:
                numbers = table[column].cast(pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InputError(f"{path}: column {column!r} must hold numbers; it holds "
                                 f"{table[column].type}") from None
            table = table.set_column(table.column_names.index(column), column, numbers)

    rows = []
    for row in table.to_pylist():
        n, value = row["n_params"], row["value"]
        if n is None or value is None:
            continue
        if not n > 0:
            raise InputError(f"{path}: column 'n_params' must be positive; found {n}")
        row["tokens"] = _tokens(row.get("tokens"), row.get("flops"), n)
        row["select"] = value if higher_is_better(metric) else -value
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows with both n_params and value")
    fitted = {"n_params", "value", "tokens", "flops", "loss", "lr", "select", "metric"}
    group_columns = tuple(c for c in table.column_names if c not in fitted)
    return PointTable(pa.Table.from_pylist(rows), path, "table", metric, group_columns,
                  "lr" if "lr" in table.column_names else None)


# --- selecting and grouping --------------------------------------------------------------------


def _rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def group_rows(rows: list[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[tuple(row.get(k) for k in keys)].append(row)
    return dict(sorted(groups.items(), key=lambda kv: tuple(_sort_key(v) for v in kv[0])))


def _sort_key(value: Any) -> tuple:
    """Numbers in numeric order, then strings, then missing values."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value)) if value is not None else (2, 0.0, "")


def best_rows(rows: list[dict], keys: Sequence[str]) -> list[dict]:
    """The row with the highest `select` per key (the best learning rate by English dev)."""
    best: dict[tuple, dict] = {}
    for row in rows:
        k = tuple(row.get(c) for c in keys)
        if k not in best or _score(row) > _score(best[k]):
            best[k] = row
    return list(best.values())


def _score(row: dict) -> float:
    s = row.get("select")
    return -math.inf if s is None or (isinstance(s, float) and math.isnan(s)) else s


def best_points(points: PointTable, by: Sequence[str]) -> pa.Table:
    """One row per group, size and seed (and D with `all_steps`): the best trial by English
    dev score. A table of published results is taken as it is (each row is a result)."""
    return pa.Table.from_pylist(_best_of(points, _rows(points.table), by), points.table.schema)


def _best_of(points: PointTable, rows: list[dict], by: Sequence[str]) -> list[dict]:
    if points.kind == "table":
        return rows
    keys = list(by) + ["n_params", "seed"] + (["tokens"] if points.per_step else [])
    return best_rows(rows, keys)


# --- gains from intermediate training ----------------------------------------------------------


def intermediate_gains(points: PointTable) -> pa.Table:
    """Each mixture's best trial minus the mixture="none" best trial of the same model, seed,
    task and language. Columns: model, n_params, seed, task, language, mixture, mixture_kind,
    value, baseline, gain."""
    if points.kind != "sweep":
        raise InputError(f"{points.source}: gains need a sweep directory (mixtures and seeds)")
    cell = ("model", "seed", "task", "language")
    best = best_rows(_rows(points.table), cell + ("mixture",))
    baseline = {tuple(r[c] for c in cell): r["value"] for r in best if r["mixture"] == "none"}
    if not baseline:
        raise InputError(f"{points.source}: column 'mixture' has no 'none' rows, so there is no "
                         f"baseline for the gain; mixtures present: "
                         f"{_join(r['mixture'] for r in best)}")
    out = []
    for r in best:
        base = baseline.get(tuple(r[c] for c in cell))
        if r["mixture"] == "none" or base is None:
            continue
        gain = r["value"] - base if points.higher_is_better else base - r["value"]
        out.append({**{c: r[c] for c in ("model", "n_params", "seed", "task", "language",
                                          "mixture", "mixture_kind", "value")},
                    "baseline": base, "gain": gain})
    return pa.Table.from_pylist(out, schema=GAINS_SCHEMA)


GAINS_SCHEMA = pa.schema([
    ("model", pa.string()), ("n_params", pa.float64()), ("seed", pa.int64()),
    ("task", pa.string()), ("language", pa.string()), ("mixture", pa.string()),
    ("mixture_kind", pa.string()), ("value", pa.float64()), ("baseline", pa.float64()),
    ("gain", pa.float64()),
])


def headline_task(tasks: Iterable[str]) -> str:
    """The task a one-figure summary shows: the XTREME-R aggregate where there is one."""
    tasks = sorted(set(tasks))
    if not tasks:
        raise InputError("no tasks")
    return "xtreme_r" if "xtreme_r" in tasks else tasks[0]


@dataclass(frozen=True)
class Matrix:
    """A labelled 2-D array (rows x columns), nan where a cell has no data."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    values: np.ndarray
    title: str = ""


def _mean_matrix(records: Iterable[tuple[str, str, float]], title: str = "",
                 columns: Sequence[str] | None = None) -> Matrix:
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r, c, v in records:
        cells[r, c].append(v)
    rows = tuple(sorted({r for r, _ in cells}))
    columns = tuple(columns) if columns else tuple(sorted({c for _, c in cells}))
    values = np.full((len(rows), len(columns)), np.nan)
    for (r, c), vs in cells.items():
        if c in columns:
            values[rows.index(r), columns.index(c)] = float(np.mean(vs))
    return Matrix(rows, columns, values, title)


def gain_matrix(gains: pa.Table, *, n_params: float | None = None, language: str = "all",
                tasks: Sequence[str] | None = None) -> Matrix:
    """Mean gain (over seeds) per (intermediate mixture, target task) at one size (default: the
    largest): the seed study's main figure."""
    rows = [r for r in _rows(gains) if r["language"] == language]
    if not rows:
        raise InputError(f"no gains for language {language!r}")
    size = max(r["n_params"] for r in rows) if n_params is None else n_params
    tasks = tasks or sorted({r["task"] for r in rows if "/" not in r["task"]})
    return _mean_matrix(((r["mixture"], r["task"], r["gain"]) for r in rows
                         if r["n_params"] == size), f"N = {size:.3g}", tasks)


def gain_by_language(gains: pa.Table, *, n_params: float | None = None,
                     task: str | None = None) -> Matrix:
    """Mean gain per (mixture kind, language) over mixtures and seeds; one task, or the mean over
    single tasks (no aggregates) by default. Default size: the largest."""
    rows = [r for r in _rows(gains) if r["language"] != "all"]
    if not rows:
        raise InputError("no per-language gains (load the points with every language)")
    size = max(r["n_params"] for r in rows) if n_params is None else n_params
    rows = [r for r in rows if r["n_params"] == size
            and (r["task"] == task if task else "/" not in r["task"] and r["task"] != "xtreme_r")]
    languages = sorted({r["language"] for r in rows}, key=lambda lang: (lang != "en", lang))
    return _mean_matrix(((r["mixture_kind"], r["language"], r["gain"]) for r in rows),
                        f"N = {size:.3g}" + (f", {task}" if task else ", mean over tasks"),
                        columns=languages)  # English first: the source language


@dataclass(frozen=True)
class Curve:
    label: str
    x: np.ndarray
    y: np.ndarray
    err: np.ndarray  # standard error over seeds and mixtures (0 with one value)


def gain_by_kind(gains: pa.Table, *, task: str = "xtreme_r", language: str = "all") -> list[Curve]:
    """Mean gain per size for English vs multilingual intermediate mixtures."""
    rows = [r for r in _rows(gains) if r["task"] == task and r["language"] == language]
    if not rows:
        raise InputError(f"no gains for task {task!r}, language {language!r}; tasks: "
                         f"{_join(r['task'] for r in _rows(gains))}")
    curves = []
    for kind, kind_rows in group_rows(rows, ("mixture_kind",)).items():
        by_size = group_rows(kind_rows, ("n_params",))
        x = np.array([k[0] for k in by_size])
        vals = [np.array([r["gain"] for r in rs]) for rs in by_size.values()]
        y = np.array([v.mean() for v in vals])
        err = np.array([v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0 for v in vals])
        curves.append(Curve(kind[0], x, y, err))
    return curves


# --- fitting per group -------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupFit:
    """One form fitted to one group."""

    keys: tuple[tuple[str, Any], ...]  # (column, value) of the group
    metric: str | None
    target: str  # what y is: "1 - score", "score", "loss", "lr* (max score)"
    fit: scaling.Fit
    data: scaling.Points  # the points the form was fitted on, for plots

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.keys) or "all"


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


def form_points(form: str, points: PointTable, all_rows: list[dict],
                best: list[dict]) -> tuple[scaling.Points, str]:
    """The `scaling.Points` a form is fitted on, and a name for y. Raises InputError when a
    column the form needs is missing. Rows with a missing or non-finite number (a diverged
    trial) are left out."""
    hib = points.higher_is_better
    metric = points.metric or "value"
    error_target = f"1 - {metric}" if hib else metric

    def need(rows: list[dict], column: str, why: str) -> np.ndarray:
        values = _arr(rows, column)
        if np.isnan(values).all():
            raise InputError(f"{points.source}: form {form!r} needs column {column!r} ({why}); "
                             f"it is missing or empty")
        return values

    n, v = _arr(best, "n_params"), _arr(best, "value")
    if form == "lr_law":
        lr = need(all_rows, "lr", "the learning rate of each trial")
        data = scaling.Points(_arr(all_rows, "n_params"), _arr(all_rows, "value"), lr=lr)
        target = f"lr* ({'max' if hib else 'min'} {metric})"
    elif form == "power_law":
        data, target = scaling.Points(n, 1 - v if hib else v), error_target
    elif form == "bounded":
        if not hib:
            raise InputError(f"form 'bounded' is for accuracy-like metrics bounded in "
                             f"[chance, 1] ({', '.join(HIGHER_IS_BETTER)}, map@k); got {metric!r}")
        data, target = scaling.Points(n, v), metric
    elif form == "chinchilla":
        d = need(best, "tokens", "training tokens D, or flops for D = flops / 6N")
        data, target = scaling.Points(n, 1 - v if hib else v, d=d), error_target
    elif form == "two_step":
        d = need(best, "tokens", "training tokens D, or flops for D = flops / 6N")
        loss = need(best, "loss", "the task loss; in a sweep the final target-stage train loss")
        data, target = scaling.Points(n, v, d=d, loss=loss), metric
    else:
        raise InputError(f"unknown form {form!r}; allowed: {', '.join(scaling.FORMS)}")
    return _finite_rows(data), target


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
                         f"group columns allowed: {_join(points.group_columns)}")
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
               n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> Fits:
    """Fit every form to every group. Raises InputError where a group has too few points or a
    form's column is missing everywhere; a two-step form skips groups without a task loss
    (aggregates such as xtreme_r have none) and says so in `skipped`."""
    by = resolve_group_columns(points, by)
    if forms is None:
        forms = SWEEP_DEFAULT_FORMS if points.kind == "sweep" else TABLE_DEFAULT_FORMS
        if points.lr_column is None:
            forms = tuple(f for f in forms if f != "lr_law")
    for name in forms:
        if name not in scaling.FORMS:
            raise InputError(f"unknown form {name!r}; allowed: {', '.join(scaling.FORMS)}")

    fits, skipped = [], []
    for key, rows in group_rows(_rows(points.table), by).items():
        keys = tuple(zip(by, key))
        label = ", ".join(f"{k}={v}" for k, v in keys) or "all"
        best = _best_of(points, rows, by)
        task = dict(keys).get("task")
        for name in forms:
            group_chance = chance
            if name == "bounded" and chance is None:  # the task registry is slow to import
                group_chance = chance_level(task, points.metric)
            form = make_form(name, maximize=points.higher_is_better, chance=group_chance or 0.0)
            if name == "two_step" and all(r.get("loss") is None for r in best):
                skipped.append(f"{label}: two_step skipped, no task loss")
                continue
            data, target = form_points(name, points, rows, best)
            try:
                result = scaling.fit(form, data, n_boot=n_boot, level=level, seed=seed)
            except scaling.NotEnoughPoints as err:
                columns = "n_params" + (", tokens" if name in ("chinchilla", "two_step") else "")
                raise InputError(f"{points.source}: group {label} (columns {columns}): {err}"
                                 ) from None
            fits.append(GroupFit(keys, points.metric, target, result, data))
    if not fits:
        raise InputError(f"{points.source}: nothing to fit; {'; '.join(skipped)}")
    return Fits(tuple(fits), tuple(skipped))


# --- the fits table ----------------------------------------------------------------------------

HOLDOUT_COLUMNS = ("holdout_n_params", "holdout_pred", "holdout_true", "holdout_abs_err",
                   "holdout_rel_err")
FIT_COLUMNS = ("metric", "form", "target", "n_points", "n_sizes", "rmse", "n_boot", "ci_level")
TRAILING_COLUMNS = ("chance", "source")


def _fits_table_columns() -> set[str]:
    """Every column name the fits table may use besides the group keys."""
    params = {f"{p}{suffix}" for form in scaling.FORMS.values() for p in form.param_names
              for suffix in ("", "_lo", "_hi")}
    return params | set(FIT_COLUMNS) | set(HOLDOUT_COLUMNS) | set(TRAILING_COLUMNS)


def fits_table(fits: Sequence[GroupFit], source: str | Path = "") -> pa.Table:
    """One row per group and form: group keys, form, counts, each parameter with its interval
    (`<p>`, `<p>_lo`, `<p>_hi`), and the leave-largest-out columns."""
    key_columns = list(dict.fromkeys(k for f in fits for k, _ in f.keys))
    param_columns = list(dict.fromkeys(p.name for f in fits for p in f.fit.params))
    types = {"metric": pa.string(), "form": pa.string(), "target": pa.string(),
             "n_points": pa.int64(), "n_sizes": pa.int64(), "rmse": pa.float64(),
             "n_boot": pa.int64(), "ci_level": pa.float64()}
    fields = [pa.field(k, pa.string()) for k in key_columns]
    fields += [pa.field(c, types[c]) for c in FIT_COLUMNS]
    for p in param_columns:
        fields += [pa.field(p, pa.float64()), pa.field(f"{p}_lo", pa.float64()),
                   pa.field(f"{p}_hi", pa.float64())]
    fields += [pa.field(c, pa.float64()) for c in HOLDOUT_COLUMNS]
    fields += [pa.field("chance", pa.float64()), pa.field("source", pa.string())]

    rows = []
    for f in fits:
        row: dict[str, Any] = {k: None if v is None else str(v) for k, v in f.keys}
        row.update(metric=f.metric, form=f.fit.name, target=f.target, n_points=f.fit.n_points,
                   n_sizes=f.fit.n_sizes, rmse=f.fit.rmse, n_boot=len(f.fit.boot),
                   ci_level=f.fit.level, chance=getattr(f.fit.form, "chance", None),
                   source=str(source))
        for p in f.fit.params:
            row.update({p.name: p.value, f"{p.name}_lo": p.lo, f"{p.name}_hi": p.hi})
        h = f.fit.holdout
        if h is not None:
            row.update(holdout_n_params=h.n_params, holdout_pred=h.pred, holdout_true=h.true,
                       holdout_abs_err=h.abs_err, holdout_rel_err=h.rel_err)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def default_fits_path(points: PointTable) -> Path:
    if points.kind == "sweep":
        return points.source / "fits.parquet"
    return points.source.with_name(f"{points.source.stem}.fits.parquet")


def write_fits(table: pa.Table, path: Path) -> Path:
    try:
        # The same write-then-rename as the sweep's own tables: readers never see half a file.
        return results.atomic_write(table, path)
    except OSError as err:
        raise InputError(f"{path}: cannot write the fits table ({err.strerror or err}); "
                         "pass --out PATH") from None


# --- the summary -------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def summary_table(fits: Sequence[GroupFit], title: str = "scaling fits"):
    """A rich table: group, form, points, parameters with their intervals, held-out error."""
    from rich.table import Table

    level = fits[0].fit.level if fits else 0.95
    table = Table(title=title, show_lines=True)
    table.add_column("group")
    table.add_column("form\n(fitted)")
    table.add_column("points\n(sizes)", justify="right")
    table.add_column(f"parameters [{level:.0%} CI]")
    table.add_column("largest size held out:\npred vs true (rel err)")
    for f in fits:
        params = "\n".join(f"{p.name} {_fmt(p.value)} [{_fmt(p.lo)}, {_fmt(p.hi)}]"
                           for p in f.fit.params)
        h = f.fit.holdout
        holdout = "-" if h is None else (f"N={h.n_params:.3g}:\n{_fmt(h.pred)} vs "
                                         f"{_fmt(h.true)}\n({h.rel_err:.1%})")
        table.add_row("\n".join(f"{k}={v}" for k, v in f.keys) or "all",
                      f"{f.fit.name}\n({f.target})", f"{f.fit.n_points}\n({f.fit.n_sizes})",
                      params, holdout)
    return table
