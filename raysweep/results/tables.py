"""Results as Arrow tables: the schema, an append-only writer, and a reader.

Layout under a sweep directory `<storage>/<sweep>/`:

    metrics/<trial_id>-<label>-<n>.parquet   long format, one row per number
    trials/<trial_id>.parquet                one row per trial (its final one)
    attempts/<trial_id>                      how many times the trial has started
    fits.parquet                             written by `raysweep fit`

Rows are written exactly once per identity, however often a trial runs (Tune retries, Train
worker-group restarts, `raysweep resume`): a trial's metrics file is named by what it holds (the
stage or target task it flushes, and its count of that label), so a re-run writes the same name
and replaces the earlier attempt's file instead of adding one beside it; its trials row is one
file per trial. Every metrics row carries its `attempt`; where attempts' rows still meet (an
attempt that reused a stored stage leaves the earlier attempt's rows of that stage; files of
the older layout), `load` keeps, per (trial, stage, task), the rows of the highest attempt: a
rule on numbers, never on file-name order.

Every file is written under a dot-prefixed temporary name and renamed into place, so a reader
(`load`, `pyarrow.dataset`, DuckDB's `read_parquet('.../metrics/*.parquet')`) sees whole files
only; pyarrow.dataset skips dot-prefixed names by default and the glob `*.parquet` never matches
a `.tmp` name. Nothing is ever rewritten in place, so a crash cannot corrupt earlier rows.

A sweep directory is a local path or a URI (`file://`, `s3://`, `gs://`, anything
`pyarrow.fs.FileSystem.from_uri` knows): every read and write here goes through `pyarrow.fs`
(`Location`). On object stores there is no rename (a move is a copy), but one PUT is atomic
there: an object appears whole or not at all, so files are written straight to their names.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
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
        # a task name, or an aggregate: xtreme_r, xtreme_r/<category>, xtreme_r_partial[...],
        # xtreme_r_syn... (raysweep.tasks.aggregate)
        pa.field("task", pa.string()),
        pa.field("language", pa.string()),  # ISO code, "all" for aggregates over languages
        pa.field("split", pa.string()),  # train | validation | test | spend
        pa.field("metric", pa.string()),  # loss, accuracy, f1, em, map@20, score
        pa.field("value", pa.float64()),
        pa.field("step", pa.int64()),  # optimizer steps taken in this stage so far
        pa.field("tokens", pa.int64()),  # training tokens seen by the model so far (all stages)
        pa.field("flops", pa.float64()),  # training FLOPs spent on the model so far (all stages)
        pa.field("wall_s", pa.float64()),  # seconds since the stage started
        # split "spend" rows only (raysweep.run.runner.record_spend): the stage's wall seconds
        # times the trial's devices (GPUs, or CPU workers)
        pa.field("device_s", pa.float64()),
        *HPARAM_FIELDS,
        pa.field("attempt", pa.int64()),  # the trial's attempt that wrote it (1, 2, ...)
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
        pa.field("precision", pa.string()),  # "fp32" | "bf16" (its training stages')
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
        pa.field("attempt", pa.int64()),  # attempts the trial took (retries and resumes + 1)
        # Why a failed trial failed (null otherwise): nan_loss | out_of_memory | data | error
        # (raysweep.run.failures), and where: the stage and its last logged step.
        pa.field("failure", pa.string()),
        pa.field("failed_stage", pa.string()),
        pa.field("failed_step", pa.int64()),
    ]
)

TABLES = {"metrics": METRICS_SCHEMA, "trials": TRIALS_SCHEMA}
# Trials also carry one float64 column per intermediate task of their mixture, `mix_<task>`: its
# normalized weight (null: not in the trial's mixture). The set depends on the space, so these
# columns are added per file and unified on reading.
MIX_PREFIX = "mix_"


def _with_mix_columns(schema: pa.Schema, names: Iterable[str]) -> pa.Schema:
    extra = sorted({n for n in names if n.startswith(MIX_PREFIX)} - set(schema.names))
    return pa.schema([*schema, *(pa.field(n, pa.float64()) for n in extra)])

# A trial's final status in the trials table.
DONE, STOPPED, ERROR = "done", "stopped", "error"


# Stores where a whole-object PUT is atomic and a rename is a copy: written in place. Named as
# `FileSystem.type_name` ends: "s3", "gcs"; "py::fsspec+gs" for a Python (fsspec) one.
OBJECT_STORES = frozenset({"s3", "gcs", "gs", "abfs"})
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(where: str | os.PathLike) -> bool:
    return bool(_URI.match(os.fspath(where)))


@functools.lru_cache(maxsize=64)  # s3's from_uri asks for the bucket's region: once per URI
def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(uri)


@dataclass(frozen=True)
class Location:
    """A results file or directory: a `pyarrow.fs` file system and a path on it. `name` is what
    it was given as (a local path or a URI), what `str()` gives and what other processes (Ray
    workers) are handed; a Location built on another file system (a test's SubTreeFileSystem)
    lives in this process only."""

    fs: pafs.FileSystem
    path: str
    name: str

    def __truediv__(self, part: str) -> "Location":
        return Location(self.fs, f"{self.path.rstrip('/')}/{part}", _join(self.name, part))

    def __str__(self) -> str:
        return self.name

    def with_name(self, base: str) -> "Location":
        """The file `base` beside this one (as `Path.with_name`)."""
        parent = Location(self.fs, self.path.rpartition("/")[0],
                          _parent_name(self.name))
        return parent / base

    @property
    def local(self) -> bool:
        return self.fs.type_name == "local"

    def is_dir(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.Directory


Where = str | os.PathLike | Location  # a sweep directory or a file in one, however given


def _join(name: str, part: str) -> str:
    if not is_uri(name):
        return os.path.join(name, part)
    u = urlsplit(name)  # s3://bucket/dir?region=x: the part goes into the path, not the query
    return urlunsplit(u._replace(path=f"{u.path.rstrip('/')}/{part}"))


def _parent_name(name: str) -> str:
    if not is_uri(name):
        return os.path.dirname(name)
    u = urlsplit(name)
    return urlunsplit(u._replace(path=u.path.rstrip("/").rpartition("/")[0]))


def location(where: Where) -> Location:
    """A local path, a URI or a Location, as a Location."""
    if isinstance(where, Location):
        return where
    name = os.fspath(where)
    if is_uri(name):
        fs, path = _from_uri(name)
        return Location(fs, path, name)
    return Location(pafs.LocalFileSystem(), os.path.abspath(name), name)


def put_bytes(where: Where, data: bytes) -> None:
    """Write a whole file so that a reader sees all of it or none of it."""
    loc = location(where)
    parent, _, base = loc.path.rpartition("/")
    if re.split(r"::|\+", loc.fs.type_name)[-1] in OBJECT_STORES:
        # On an object store one PUT (or a multipart upload, completed in one call) is atomic:
        # the object appears whole or not at all, and there is no rename (a move is a copy).
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
        return
    tmp = "/".join(filter(None, [parent, f".tmp-{uuid.uuid4().hex}-{base}"]))
    if loc.local:  # os calls, so a path that cannot be written raises OSError as before
        os.makedirs(parent, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name appears
            os.replace(tmp, loc.path)
        finally:  # a full disk: no half file is left behind, under any name
            if os.path.exists(tmp):
                os.unlink(tmp)
        return
    loc.fs.create_dir(parent, recursive=True)
    with loc.fs.open_output_stream(tmp) as f:
        f.write(data)
    loc.fs.move(tmp, loc.path)  # a rename on file systems (HDFS, a SubTreeFileSystem's base)


def read_text(where: Where) -> str | None:
    """A small text file's contents, or None where there is none."""
    loc = location(where)
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None


def atomic_write(table: pa.Table, path: Where) -> Path | str:
    """Write one Parquet file whole (see the module docstring); returns where it went."""
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    put_bytes(path, buf.getvalue().to_pybytes())
    return path if isinstance(path, Path) else str(path)


def to_table(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    rows = list(rows)
    unknown = {k for r in rows for k in r} - set(schema.names)
    if unknown:
        raise KeyError(f"columns not in the schema: {sorted(unknown)}")
    return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)


class MetricsWriter:
    """Collects rows for one trial; each `flush(label)` lands one Parquet file atomically, named
    by the trial, the label and how often this writer flushed that label: the same name in
    every attempt of the trial, so a re-run replaces its rows (see the module docstring)."""

    def __init__(self, sweep_dir: Where, trial_id: str, base: dict[str, Any], attempt: int = 1):
        self.dir = location(sweep_dir) / "metrics"
        self.trial_id = trial_id
        self.base = {**base, "attempt": attempt}
        self.rows: list[dict[str, Any]] = []
        self._flushed: collections.Counter[str] = collections.Counter()

    def add(self, **row: Any) -> None:
        self.rows.append({**self.base, **row})

    def flush(self, label: str) -> str | None:
        if not self.rows:
            return None
        table = to_table(self.rows, METRICS_SCHEMA)
        self.rows = []
        name = f"{self.trial_id}-{label}-{self._flushed[label]:04d}.parquet"
        self._flushed[label] += 1
        return atomic_write(table, self.dir / name)

    def state(self) -> dict[str, Any]:
        """The rows not yet flushed and how often each label was flushed (a mid-stage
        checkpoint's share of the writer: `raysweep.run.resume`)."""
        return {"rows": list(self.rows), "flushed": dict(self._flushed)}

    def restore(self, state: dict[str, Any]) -> None:
        """Take back `state()`'s rows, stamped with this writer's attempt (so that they are not
        dropped as an older attempt's); file names continue where the flush counts were."""
        self.rows = [{**row, "attempt": self.base["attempt"]} for row in state["rows"]]
        self._flushed.update(state["flushed"])


def begin_attempt(sweep_dir: Where, trial_id: str) -> int:
    """Count one more start of `trial_id` (its function trainable calls this; one attempt of a
    trial runs at a time) and return the new attempt number, 1 for the first."""
    n = attempts(sweep_dir, trial_id) + 1
    put_bytes(location(sweep_dir) / "attempts" / trial_id, str(n).encode())
    return n


def finished_trial(sweep_dir: Where, trial_id: str) -> dict[str, Any] | None:
    """The trial's trials row if it finished (status done), else None."""
    loc = location(sweep_dir) / "trials" / f"{trial_id}.parquet"
    try:
        with loc.fs.open_input_file(loc.path) as f:
            rows = pq.read_table(f).to_pylist()
    except FileNotFoundError:
        return None
    return rows[0] if rows and rows[0].get("status") == DONE else None


def attempts(sweep_dir: Where, trial_id: str) -> int:
    """How many times `trial_id` has started (0: never)."""
    return int(read_text(location(sweep_dir) / "attempts" / trial_id) or 0)


def write_trial(sweep_dir: Where, row: dict[str, Any]) -> str:
    table = to_table([row], _with_mix_columns(TRIALS_SCHEMA, row))
    return atomic_write(table, location(sweep_dir) / "trials" / f"{row['trial_id']}.parquet")


def load(path: Where, table: str = "metrics") -> pa.Table:
    """Read one table of a sweep directory (or a directory of Parquet files) as one Arrow table.

    A table with no files yet comes back empty, with its schema."""
    loc = location(path)
    if (loc / table).is_dir():
        loc = loc / table
    schema = TABLES.get(table)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    files = sorted(i.path for i in infos if i.is_file and i.base_name.endswith(".parquet")
                   and not i.base_name.startswith("."))
    if not files:
        if schema is None:
            raise FileNotFoundError(f"{loc}: no Parquet files")
        return schema.empty_table()
    if table == "trials":
        schema = _with_mix_columns(schema, (n for f in files for n in
                                            pq.read_schema(f, filesystem=loc.fs).names))
    data = ds.dataset(files, format="parquet", schema=schema, filesystem=loc.fs).to_table()
    return latest_attempts(data) if table == "metrics" else data


def latest_attempts(t: pa.Table) -> pa.Table:
    """Per (trial, stage, task), only the rows of the highest attempt that wrote any (rows of
    the older layout, without an attempt, count as attempt 0)."""
    if t.num_rows == 0:
        return t
    attempt = pc.fill_null(t["attempt"], 0)
    spread = pa.table({"trial_id": t["trial_id"], "a": attempt}).group_by("trial_id").aggregate(
        [("a", "min"), ("a", "max")])
    if pc.all(pc.equal(spread["a_min"], spread["a_max"])).as_py():
        return t  # every trial's rows come from one attempt: nothing to choose
    keys = list(zip(*(t[c].to_pylist() for c in ("trial_id", "stage", "task"))))
    values = attempt.to_pylist()
    best: dict[tuple, int] = {}
    for k, a in zip(keys, values):
        best[k] = max(best.get(k, a), a)
    return t.filter(pa.array([a == best[k] for k, a in zip(keys, values)]))
