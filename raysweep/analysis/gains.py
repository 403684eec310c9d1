"""The gain from intermediate training, as a table (`gains.parquet`, written by `raysweep fit`
beside `fits.parquet`), and the views of that table the figures and the notebook show.

A gain is a mixture's best trial minus the best trial without intermediate training (the
mixture named `NO_MIXTURE`) of the same model, seed, task and language, each the best over
learning rates by the one rule in `raysweep.results.best`. Positive is better, for a loss too.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa

from raysweep.analysis.points import InputError, PointTable, group_rows, join_names
from raysweep.results.best import pick_best
from raysweep.results.tables import Location
from raysweep.spec.names import NO_MIXTURE
from raysweep.tasks.aggregate import is_aggregate

GAINS_FILE = "gains.parquet"
GAINS_SCHEMA = pa.schema([
    ("model", pa.string()), ("n_params", pa.float64()), ("seed", pa.int64()),
    ("task", pa.string()), ("language", pa.string()), ("mixture", pa.string()),
    ("mixture_kind", pa.string()), ("value", pa.float64()), ("baseline", pa.float64()),
    ("gain", pa.float64()),
])
# One baseline per cell: the same model, seed, task and language without intermediate training.
CELL = ("model", "seed", "task", "language")


def intermediate_gains(points: PointTable) -> pa.Table:
    """Each mixture's best trial minus the baseline's of the same cell. Columns: model,
    n_params, seed, task, language, mixture, mixture_kind, value, baseline, gain. Raises
    InputError for a table, or a sweep without the baseline mixture."""
    if points.kind != "sweep":
        raise InputError(f"{points.source}: gains need a sweep directory (mixtures and seeds)")
    best = pick_best(points.table.to_pylist(), CELL + ("mixture",), score="select",
                     mode=points.mode)
    baseline = {tuple(r[c] for c in CELL): r["value"] for r in best
                if r["mixture"] == NO_MIXTURE}
    if not baseline:
        raise InputError(f"{points.source}: column 'mixture' has no {NO_MIXTURE!r} rows, so "
                         f"there is no baseline for the gain; mixtures present: "
                         f"{join_names(r['mixture'] for r in best)}")
    out = []
    for r in best:
        base = baseline.get(tuple(r[c] for c in CELL))
        if r["mixture"] == NO_MIXTURE or base is None:
            continue
        gain = r["value"] - base if points.higher_is_better else base - r["value"]
        out.append({**{c: r[c] for c in ("model", "n_params", "seed", "task", "language",
                                          "mixture", "mixture_kind", "value")},
                    "baseline": base, "gain": gain})
    return pa.Table.from_pylist(out, schema=GAINS_SCHEMA)


def gains_path(fits_path: Path | Location) -> Path | Location:
    """Beside the fits table: `<dir>/gains.parquet` for `<dir>/fits.parquet`, else
    `<stem>.gains.parquet` (a chosen --out name keeps its own gains beside it)."""
    if isinstance(fits_path, Location):  # a sweep given by URI
        base = fits_path.path.rpartition("/")[2]
        stem = base.rpartition(".")[0] or base
    else:
        base, stem = fits_path.name, fits_path.stem
    if base == "fits.parquet":
        return fits_path.with_name(GAINS_FILE)
    return fits_path.with_name(f"{stem}.{GAINS_FILE}")


def headline_task(tasks: Iterable[str]) -> str:
    """The task a one-figure summary shows: the XTREME-R aggregate where there is one."""
    tasks = sorted(set(tasks))
    if not tasks:
        raise InputError("no tasks")
    # The complete benchmark aggregate first, then any other aggregate (partial, synthetic),
    # then the first task.
    aggregates = [t for t in tasks if is_aggregate(t) and "/" not in t]
    return "xtreme_r" if "xtreme_r" in tasks else (aggregates or tasks)[0]


# --- views of the gains table ------------------------------------------------------------------


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
    rows = [r for r in gains.to_pylist() if r["language"] == language]
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
    rows = [r for r in gains.to_pylist() if r["language"] != "all"]
    if not rows:
        raise InputError("no per-language gains (load the points with every language)")
    size = max(r["n_params"] for r in rows) if n_params is None else n_params
    rows = [r for r in rows if r["n_params"] == size
            and (r["task"] == task if task else not is_aggregate(r["task"]))]
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
    all_rows = gains.to_pylist()
    rows = [r for r in all_rows if r["task"] == task and r["language"] == language]
    if not rows:
        raise InputError(f"no gains for task {task!r}, language {language!r}; tasks: "
                         f"{join_names(r['task'] for r in all_rows)}")
    curves = []
    for kind, kind_rows in group_rows(rows, ("mixture_kind",)).items():
        by_size = group_rows(kind_rows, ("n_params",))
        x = np.array([k[0] for k in by_size])
        vals = [np.array([r["gain"] for r in rs]) for rs in by_size.values()]
        y = np.array([v.mean() for v in vals])
        err = np.array([v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0 for v in vals])
        curves.append(Curve(kind[0], x, y, err))
    return curves
