"""Reading what to fit: a sweep's tables, or a CSV / Parquet results table, into points.

Everything here is small tables: a sweep's metrics are filtered with pyarrow first, then the few
thousand rows that matter are handled as plain Python rows.

Conventions read from a sweep (see `raysweep.results.tables`):
- only trials that finished (status "done") are read; a crash mid-eval leaves partial rows;
- the fitted number is the last row (highest step) per (trial, stage, task, language, split,
  metric); with `all_steps` every step is a point (training curves for the (N, D) forms);
- each point carries `select`, the English dev score it is chosen by (`raysweep.results.best`):
  the same task's (stage=eval, split=validation, language=en, metric=score), else the trial's
  `objective` where a task has no dev row (the XTREME-R aggregates);
- the swept learning rate is read from the sweep's own space.json;
- N is `n_params`; D is `tokens`, or flops / (6 N) where tokens are missing.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raysweep.results import tables as results
from raysweep.results.best import DEFAULT_MODE, finished_trial_ids, pick_best, recorded_space

# The learning rates a space can search, latest stage first: where a space searches several,
# the lr law is about the target stage's, the one each task's English dev score selects.
SEARCHED_LRS = ("lr_target", "lr_intermediate", "lr_pretrain")
TABLE_REQUIRED = ("n_params", "value")
TABLE_OPTIONAL = ("tokens", "flops", "loss", "lr", "metric")
# Metrics where higher is better, in [0, 1]: fitted as an error 1 - value by the power law.
HIGHER_IS_BETTER = ("score", "accuracy", "acc", "f1", "em", "exact_match")
HIGHER_IS_BETTER_PREFIXES = ("map@", "accuracy", "acc_", "ndcg", "recall@", "precision@")
SWEEP_GROUP_COLUMNS = ("task", "language", "mixture", "mixture_kind", "model", "seed")


class InputError(ValueError):
    """Bad input to `raysweep fit`. The message names the file, the column or key, and what is
    allowed; the CLI prints it and exits with status 2."""


def higher_is_better(metric: str | None) -> bool:
    if metric is None:
        return False
    m = metric.lower()
    return m in HIGHER_IS_BETTER or m.startswith(HIGHER_IS_BETTER_PREFIXES)


def join_names(values: Iterable[Any]) -> str:
    """Sorted, distinct, comma-separated: the "allowed: ..." part of a message."""
    values = sorted({str(v) for v in values})
    return ", ".join(values) if values else "(none)"


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
    as a pyarrow table with n_params, tokens, value, select (the English dev score "best" is
    judged by), loss, lr and the group columns. `fits.fit_groups` fits each group."""

    table: pa.Table
    source: Path | results.Location  # a Location for a sweep given by URI (s3://, gs://, file://)
    kind: str  # "sweep" | "table"
    metric: str | None
    group_columns: tuple[str, ...]  # the columns a user may group by
    lr_column: str | None = None  # the swept learning rate a sweep's `lr` comes from
    per_step: bool = False  # every step is a point (training curves), not just the last
    mode: str = DEFAULT_MODE  # which way `select` is better: the sweep's search.mode

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
    """Read a sweep directory (a path or a URI) or a CSV / Parquet table (a path)."""
    if results.is_uri(source):
        loc = results.location(source)
        if not loc.is_dir():
            raise InputError(f"{source}: no such sweep directory (a URI must name a sweep "
                             "directory with metrics/*.parquet)")
        return load_sweep_points(loc, selection or Selection())
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


# --- a sweep -----------------------------------------------------------------------------------


def load_sweep_points(sweep_dir: Path | results.Location, selection: Selection) -> PointTable:
    if selection.metric is None:
        selection = replace(selection, metric="score")
    metrics_dir = sweep_dir / "metrics"
    metrics = results.load(sweep_dir, "metrics")
    if metrics.num_rows == 0:
        raise InputError(f"{metrics_dir}: no results (no Parquet files with rows); a sweep "
                         "directory needs metrics/*.parquet written by a sweep")
    trials = results.load(sweep_dir, "trials")
    finished = finished_trial_ids(trials.select(["trial_id", "status"]).to_pylist())
    metrics = metrics.filter(pc.is_in(metrics["trial_id"], pa.array(sorted(finished),
                                                                     pa.string())))
    if metrics.num_rows == 0:
        raise InputError(f"{sweep_dir / 'trials'}: no trial has status 'done' yet")

    rows = _filter(metrics, stage=selection.stage, split=selection.split)
    if rows.num_rows == 0:
        pairs = {f"{s}/{p}" for s, p in zip(metrics["stage"].to_pylist(),
                                             metrics["split"].to_pylist())}
        raise InputError(f"{metrics_dir}: no rows with stage={selection.stage!r} and "
                         f"split={selection.split!r}; stage/split present: {join_names(pairs)}")
    present = set(rows["metric"].to_pylist())
    if selection.metric not in present:
        raise InputError(f"{metrics_dir}: column 'metric' has no {selection.metric!r} for "
                         f"stage={selection.stage!r}, split={selection.split!r}; "
                         f"allowed: {join_names(present)}")
    rows = _filter(rows, metric=selection.metric)
    if selection.languages is not None:
        languages = set(rows["language"].to_pylist())
        missing = set(selection.languages) - languages
        if missing == set(selection.languages):
            raise InputError(f"{metrics_dir}: column 'language' has none of "
                             f"{join_names(selection.languages)} for metric "
                             f"{selection.metric!r}; allowed: {join_names(languages)}")
        rows = rows.filter(pc.is_in(rows["language"], pa.array(list(selection.languages))))

    space = recorded_space(sweep_dir) or {}
    search = space.get("search", {})
    lr_column = swept_lr_column(search.get("params", {}))
    dev = _dev_scores(metrics)
    task_loss = _final_values(_filter(metrics, stage="target", split="train", metric="loss"),
                              ("trial_id", "task"))
    objective = {t: o for t, o in zip(trials["trial_id"].to_pylist(),
                                      trials["objective"].to_pylist()) if o is not None}
    keep = ("trial_id", "stage", "task", "language", "split", "metric")
    key = keep + (("step",) if selection.all_steps else ())

    points = []
    for row in _last_step(rows.to_pylist(), key):
        n = row["n_params"]
        if n is None or row["value"] is None:
            continue
        points.append({
            "trial_id": row["trial_id"], "model": row["model"], "n_params": n,
            "tokens": _tokens(row["tokens"], row["flops"], n), "step": row["step"],
            "seed": row["seed"], "mixture": row["mixture"], "mixture_kind": row["mixture_kind"],
            "lr": row[lr_column] if lr_column else None,
            "task": row["task"], "language": row["language"], "value": row["value"],
            "select": dev.get((row["trial_id"], row["task"]), objective.get(row["trial_id"])),
            "loss": task_loss.get((row["trial_id"], row["task"])),
        })
    table = pa.Table.from_pylist(points, schema=SWEEP_POINTS_SCHEMA)
    return PointTable(table, sweep_dir, "sweep", selection.metric, SWEEP_GROUP_COLUMNS,
                      lr_column, per_step=selection.all_steps,
                      mode=search.get("mode", DEFAULT_MODE))


SWEEP_POINTS_SCHEMA = pa.schema([
    ("trial_id", pa.string()), ("model", pa.string()), ("n_params", pa.float64()),
    ("tokens", pa.float64()), ("step", pa.int64()), ("seed", pa.int64()),
    ("mixture", pa.string()), ("mixture_kind", pa.string()), ("lr", pa.float64()),
    ("task", pa.string()), ("language", pa.string()), ("value", pa.float64()),
    ("select", pa.float64()), ("loss", pa.float64()),
])


def swept_lr_column(params: dict[str, Any]) -> str | None:
    """The learning rate the sweep varies, from its space.json's `search.params`: one searched
    over a range or more than one value (None when none varies: there is no optimum to find,
    and likewise for a sweep without a space.json)."""
    def varies(p: dict[str, Any]) -> bool:
        return p.get("loguniform") is not None or len(p.get("values") or ()) > 1

    return next((c for c in SEARCHED_LRS if c in params and varies(params[c])), None)


def _filter(table: pa.Table, **equal: str) -> pa.Table:
    mask = None
    for column, value in equal.items():
        m = pc.equal(table[column], value)
        mask = m if mask is None else pc.and_(mask, m)
    return table.filter(mask)


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


def _tokens(tokens: float | None, flops: float | None, n: float) -> float | None:
    if tokens is not None:
        return float(tokens)
    if flops is not None and n:
        return float(flops) / (6.0 * n)
    return None


# --- a results table ---------------------------------------------------------------------------


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
                             f"pass --metric, allowed: {join_names(present)}")
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
    # A bare table has no space.json to say which learning rate was swept: the fallback is
    # its own column named `lr`, where there is one.
    return PointTable(pa.Table.from_pylist(rows), path, "table", metric, group_columns,
                      "lr" if "lr" in table.column_names else None)


# --- grouping and the best trial ---------------------------------------------------------------


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


def best_of(points: PointTable, rows: list[dict], by: Sequence[str]) -> list[dict]:
    """Per group, size and seed (and D with `all_steps`) the best trial by English dev score
    (`raysweep.results.best`). A table of published results is taken as it is (each row is a
    result, chosen by its authors)."""
    if points.kind == "table":
        return rows
    keys = list(by) + ["n_params", "seed"] + (["tokens"] if points.per_step else [])
    return pick_best(rows, keys, score="select", mode=points.mode)


def best_points(points: PointTable, by: Sequence[str]) -> pa.Table:
    """`best_of` over the whole table, as a table."""
    return pa.Table.from_pylist(best_of(points, points.table.to_pylist(), by),
                                points.table.schema)
