"""Results as Arrow tables: the schema, an append-only writer, and a reader.

Layout under a sweep directory `<storage>/<sweep>/`:

    metrics/<trial_id>-<stage>-<n>.parquet   long format, one row per number
    trials/<trial_id>.parquet                one row per trial (latest attempt wins)
    fits.parquet                             written by `raysweep fit`

Every file is written under a dot-prefixed temporary name and renamed into place, so a reader
(`load`, `pyarrow.dataset`, DuckDB's `read_parquet('.../metrics/*.parquet')`) sees whole files
only; pyarrow.dataset skips dot-prefixed names by default and the glob `*.parquet` never matches
a `.tmp` name. Nothing is ever rewritten in place, so a crash cannot corrupt earlier rows.
"""

from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

# Hyperparameters every trial carries as typed columns (None where a stage does not run).
HPARAM_FIELDS = [
    pa.field("lr_pretrain", pa.float64()),
    pa.field("lr_intermediate", pa.float64()),
    pa.field("lr_target", pa.float64()),
    pa.field("mixture", pa.string()),
    pa.field("mixture_kind", pa.string()),  # "none" | "english" | "multilingual"
    pa.field("seed", pa.int64()),
]

METRICS_SCHEMA = pa.schema(
    [
        pa.field("sweep", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("n_params", pa.int64()),
        pa.field("stage", pa.string()),  # pretrain | intermediate | target | eval
        pa.field("task", pa.string()),  # a task name, or an aggregate: xtreme_r, xtreme_r/<category>
        pa.field("language", pa.string()),  # ISO code, "all" for aggregates over languages
        pa.field("split", pa.string()),  # train | validation | test
        pa.field("metric", pa.string()),  # loss, accuracy, f1, em, map@20, score
        pa.field("value", pa.float64()),
        pa.field("step", pa.int64()),  # optimizer steps taken in this stage so far
        pa.field("tokens", pa.int64()),  # training tokens seen by the model so far (all stages)
        pa.field("flops", pa.float64()),  # training FLOPs spent on the model so far (all stages)
        pa.field("wall_s", pa.float64()),  # seconds since the stage started
        *HPARAM_FIELDS,
    ]
)

TRIALS_SCHEMA = pa.schema(
    [
        pa.field("sweep", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("n_params", pa.int64()),
        *HPARAM_FIELDS,
        pa.field("workers", pa.int64()),  # Train workers (FSDP2 ranks) the trial ran on
        pa.field("node_id", pa.string()),  # the Ray node of its rank 0 (null: not on Ray)
        pa.field("status", pa.string()),  # done | error | stopped
        pa.field("error", pa.string()),
        pa.field("objective", pa.float64()),  # the search metric (English dev score)
        pa.field("zero_shot", pa.float64()),  # mean test score over non-English languages
        pa.field("stage_keys", pa.string()),  # JSON {stage: key}
        pa.field("reused_stages", pa.string()),  # JSON [stage, ...] loaded from the store
        pa.field("config", pa.string()),  # JSON of the trial's full config
        pa.field("wall_s", pa.float64()),
        pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    ]
)

TABLES = {"metrics": METRICS_SCHEMA, "trials": TRIALS_SCHEMA}

# A trial's final status in the trials table.
DONE, STOPPED, ERROR = "done", "stopped", "error"


def atomic_write(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}-{path.name}"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:  # the bytes are on disk before the name appears
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    unknown = {k for r in rows for k in r} - set(schema.names)
    if unknown:
        raise KeyError(f"columns not in the schema: {sorted(unknown)}")
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)


class MetricsWriter:
    """Appends rows for one trial; each `flush` lands one new Parquet file atomically."""

    def __init__(self, sweep_dir: str | os.PathLike, trial_id: str, base: dict[str, Any]):
        self.dir = Path(sweep_dir) / "metrics"
        self.trial_id = trial_id
        self.base = dict(base)
        self.rows: list[dict[str, Any]] = []
        self._n = itertools.count()
        # A relaunched trial writes new files beside its earlier ones; never over them.
        self._attempt = uuid.uuid4().hex[:8]

    def add(self, **row: Any) -> None:
        self.rows.append({**self.base, **row})

    def flush(self, label: str) -> Path | None:
        if not self.rows:
            return None
        table = to_table(self.rows, METRICS_SCHEMA)
        self.rows = []
        name = f"{self.trial_id}-{label}-{self._attempt}-{next(self._n):04d}.parquet"
        return atomic_write(table, self.dir / name)


def write_trial(sweep_dir: str | os.PathLike, row: dict[str, Any]) -> Path:
    table = to_table([row], TRIALS_SCHEMA)
    return atomic_write(table, Path(sweep_dir) / "trials" / f"{row['trial_id']}.parquet")


def load(path: str | os.PathLike, table: str = "metrics") -> pa.Table:
    """Read one table of a sweep directory (or a directory of Parquet files) as one Arrow table.

    A table with no files yet comes back empty, with its schema."""
    path = Path(path)
    if (path / table).is_dir():
        path = path / table
    schema = TABLES.get(table)
    files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        if schema is None:
            raise FileNotFoundError(f"{path}: no Parquet files")
        return schema.empty_table()
    return ds.dataset(files, format="parquet", schema=schema).to_table()
