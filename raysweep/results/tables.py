"""Results as Arrow tables: the schema, an append-only writer, and a reader.

Layout under a sweep directory `<storage>/<sweep>/`:

    metrics/<trial_id>-<stage>-<n>.parquet   long format, one row per number
    trials/<trial_id>.parquet                one row per trial (latest attempt wins)
    fits.parquet                             written by `raysweep fit`

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

import functools
import itertools
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
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
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name appears
        os.replace(tmp, loc.path)
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
    """Appends rows for one trial; each `flush` lands one new Parquet file atomically."""

    def __init__(self, sweep_dir: Where, trial_id: str, base: dict[str, Any]):
        self.dir = location(sweep_dir) / "metrics"
        self.trial_id = trial_id
        self.base = dict(base)
        self.rows: list[dict[str, Any]] = []
        self._n = itertools.count()
        # A relaunched trial writes new files beside its earlier ones; never over them.
        self._attempt = uuid.uuid4().hex[:8]

    def add(self, **row: Any) -> None:
        self.rows.append({**self.base, **row})

    def flush(self, label: str) -> str | None:
        if not self.rows:
            return None
        table = to_table(self.rows, METRICS_SCHEMA)
        self.rows = []
        name = f"{self.trial_id}-{label}-{self._attempt}-{next(self._n):04d}.parquet"
        return atomic_write(table, self.dir / name)


def write_trial(sweep_dir: Where, row: dict[str, Any]) -> str:
    table = to_table([row], TRIALS_SCHEMA)
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
    return ds.dataset(files, format="parquet", schema=schema, filesystem=loc.fs).to_table()
