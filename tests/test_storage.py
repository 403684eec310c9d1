"""Result tables on remote storage (no Ray): every write and read of a sweep directory goes
through `pyarrow.fs`, so `--storage` can be a URI. Exercised with a `file://` URI and with file
systems at pyarrow's own API backed by a local directory (`SubTreeFileSystem`, and a recording
`PyFileSystem` that sees every call), never a mock of raysweep's code. Stage outputs stay on a
shared POSIX directory: an object-store stage root is refused before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.results.best import best_trials, recorded_space
from raysweep.results.tables import (Location, MetricsWriter, atomic_write, load, location,
                                     put_bytes, read_text, to_table, write_trial, TRIALS_SCHEMA)
from raysweep.run.store import StageRootError, stage_root
from raysweep.run.sweep import Storage
from sweep_fixture import write_sweep

BASE = {"sweep": "quick", "model": "tiny-xs", "n_params": 20240}


def write_results(sweep_dir, trials=("t1", "t2")) -> None:
    """What a sweep writes: two metric files and a trials row per trial, and its space.json."""
    for i, trial in enumerate(trials):
        w = MetricsWriter(sweep_dir, trial, {**BASE, "trial_id": trial})
        for step in (5, 10):
            w.add(stage="target", task="syn_xnli", language="en", split="validation",
                  metric="score", value=0.25 * step + i, step=step)
        w.flush("target")
        w.add(stage="eval", task="syn_xnli", language="de", split="test", metric="score",
              value=0.5 + i, step=None)
        w.flush("eval")
        write_trial(sweep_dir, {**BASE, "trial_id": trial, "status": "done", "objective": 0.5 + i,
                                "workers": 2})
    put_bytes(location(sweep_dir) / "space.json", json.dumps({"name": "quick"}).encode())


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def layout(root: Path) -> list[str]:
    """Files by table, with the per-attempt part of metric file names left out."""
    return sorted(f"{p.parent.name}/{p.stem.split('-')[0]}" for p in root.rglob("*.parquet"))


def test_file_uri_sweep_dir_writes_the_local_layout_and_reads_back(tmp_path):
    uri = (tmp_path / "runs" / "quick").as_uri()
    write_results(uri)
    write_results(tmp_path / "local")  # the same through a plain path
    sweep = tmp_path / "runs" / "quick"
    assert layout(sweep) == layout(tmp_path / "local") == sorted(
        ["metrics/t1"] * 2 + ["metrics/t2"] * 2 + ["trials/t1", "trials/t2"])
    assert not [f for f in files_under(sweep) if "/." in f or f.startswith(".")]  # no temp left
    for table in ("metrics", "trials"):
        by_uri, by_path = load(uri, table), load(sweep, table)
        assert by_uri.num_rows == by_path.num_rows > 0
        assert by_uri.sort_by("trial_id").equals(by_path.sort_by("trial_id"))
    assert sorted(load(uri, "metrics").column("value").to_pylist()) == \
        sorted(load(tmp_path / "local", "metrics").column("value").to_pylist())
    assert json.loads(read_text(f"{uri}/space.json")) == {"name": "quick"}
    assert read_text(f"{uri}/missing.json") is None
    assert load((tmp_path / "nothing").as_uri(), "trials").num_rows == 0  # no files yet: empty


def test_subtree_filesystem_holds_the_same_tables(tmp_path):
    """A file system at pyarrow's API rooted in a local directory, as an s3:// one is rooted in
    its bucket: the tables land under it and read back through it."""
    fs = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    sweep = Location(fs, "runs/quick", "fake://bucket/runs/quick")
    write_results(sweep)
    assert layout(tmp_path / "bucket" / "runs" / "quick") == sorted(
        ["metrics/t1"] * 2 + ["metrics/t2"] * 2 + ["trials/t1", "trials/t2"])
    trials = load(sweep, "trials").to_pylist()
    assert sorted(t["trial_id"] for t in trials) == ["t1", "t2"]
    assert load(sweep, "metrics").num_rows == 6
    assert str(sweep / "metrics") == "fake://bucket/runs/quick/metrics"
    # A rewritten trial row replaces the earlier one (the latest attempt wins).
    write_trial(sweep, {**BASE, "trial_id": "t1", "status": "error", "workers": 2})
    assert {t["trial_id"]: t["status"] for t in load(sweep, "trials").to_pylist()} == \
        {"t1": "error", "t2": "done"}


class Recording(pafs.FileSystemHandler):
    """A pyarrow file system over a local directory that records what is written and moved,
    and calls itself `kind` (as `S3FileSystem` is "s3")."""

    def __init__(self, root: Path, kind: str):
        self.fs, self.kind = pafs.SubTreeFileSystem(str(root), pafs.LocalFileSystem()), kind
        self.opened: list[str] = []
        self.moved: list[tuple[str, str]] = []

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def get_type_name(self):
        return self.kind

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        self.fs.delete_dir_contents("", accept_root_dir=True)

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.moved.append((src, dest))
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.opened.append(path)
        if self.kind == "s3":  # no directories in a bucket: a key's prefixes exist with it
            self.fs.create_dir(path.rpartition("/")[0], recursive=True)
        return self.fs.open_output_stream(path, metadata=metadata)

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


def test_files_appear_whole_by_rename_or_by_one_put(tmp_path):
    """On a file system, a table file is written under a dot-prefixed name (which no reader
    lists) and renamed into place; on an object store (no rename there, a move is a copy), it
    is written once, straight to its name: one PUT is atomic."""
    fs_kind = Recording(tmp_path / "fs", "hdfs")
    write_results(Location(pafs.PyFileSystem(fs_kind), "sweep", "hdfs://sweep"))
    finals = {dest for _, dest in fs_kind.moved}
    assert len(finals) == 7 and all(d.endswith((".parquet", ".json")) for d in finals)
    for src, dest in fs_kind.moved:
        assert src.rsplit("/", 1)[0] == dest.rsplit("/", 1)[0]
        assert src.rsplit("/", 1)[1].startswith(".tmp-")
    assert not finals & set(fs_kind.opened)  # a final name is never written to directly

    store = Recording(tmp_path / "bucket", "s3")
    write_results(Location(pafs.PyFileSystem(store), "sweep", "s3://bucket/sweep"))
    assert store.moved == [] and len(store.opened) == 7
    assert not [p for p in store.opened if "/." in p]
    assert load(Location(pafs.PyFileSystem(store), "sweep", "s3://bucket/sweep"),
                "metrics").num_rows == 6


def test_local_writes_stay_os_level(tmp_path):
    """A local path keeps the old behaviour: the Path given back, and an OSError (what `fit`
    reports as bad input) where the directory cannot be written."""
    table = to_table([{**BASE, "trial_id": "t1", "status": "done"}], TRIALS_SCHEMA)
    out = atomic_write(table, tmp_path / "t.parquet")
    assert out == tmp_path / "t.parquet" and load(tmp_path, "trials").num_rows == 1
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        atomic_write(table, tmp_path / "file" / "t.parquet")


def test_storage_layout_local_and_uri(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = Storage.of("runs")  # the default: the layout of every earlier sweep
    runs = tmp_path.resolve() / "runs"
    assert str(local.root) == str(runs)
    assert [str(local.root / d) for d in ("quick", "tune", "train")] == \
        [str(runs / d) for d in ("quick", "tune", "train")]
    assert local.stages == runs / "stages"

    uri = Storage.of((tmp_path / "shared").as_uri())  # file://: stages in the same directory
    assert str(uri.root / "tune") == (tmp_path / "shared").as_uri() + "/tune"
    assert uri.stages == tmp_path.resolve() / "shared" / "stages"

    s3 = Storage.of("s3://bucket/runs?region=us-east-1", stages="/mnt/shared/stages")
    assert str(s3.root / "tune") == "s3://bucket/runs/tune?region=us-east-1"
    assert s3.stages == Path("/mnt/shared/stages")


@pytest.mark.parametrize("storage,stages,flag", [
    ("s3://bucket/runs", None, "--storage"),
    ("gs://bucket/runs", None, "--storage"),
    ("runs", "s3://bucket/stages", "--stages"),
])
def test_object_store_stage_root_is_refused_before_ray(storage, stages, flag):
    with pytest.raises(StageRootError, match="pass --stages DIR"):
        stage_root(storage, stages)
    args = ["launch", "--space", "tiny_scaling", "--storage", storage, "--dry-run"]
    out = CliRunner().invoke(app, args + (["--stages", stages] if stages else []),
                             env={"COLUMNS": "300"})
    assert out.exit_code == 2, out.output
    assert f"{flag} {stages or storage}" in out.output and "--stages DIR" in out.output
    assert "POSIX" in out.output


def test_remote_storage_with_a_shared_stage_dir_is_accepted(tmp_path):
    out = CliRunner().invoke(app, ["launch", "--space", "tiny_scaling", "--storage",
                                   "s3://bucket/runs", "--stages", str(tmp_path), "--dry-run"],
                             env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert stage_root("s3://bucket/runs", tmp_path) == tmp_path
    assert stage_root((tmp_path / "shared").as_uri()) == tmp_path / "shared" / "stages"


def test_show_reads_a_sweep_by_uri(tmp_path):
    write_sweep(tmp_path / "synth", sizes={"s": 100_000, "m": 1_000_000}, seeds=(0,))
    uri = (tmp_path / "synth").as_uri()
    assert recorded_space(uri) == recorded_space(tmp_path / "synth") is not None
    assert best_trials(uri) == best_trials(tmp_path / "synth")
    runner = CliRunner()
    by_uri = runner.invoke(app, ["show", uri], env={"COLUMNS": "200"})
    by_path = runner.invoke(app, ["show", str(tmp_path / "synth")], env={"COLUMNS": "200"})
    assert by_uri.exit_code == 0, by_uri.output
    assert by_uri.output == by_path.output and "synth" in by_uri.output
    missing = runner.invoke(app, ["show", (tmp_path / "none").as_uri()])
    assert missing.exit_code == 2 and "not a sweep directory" in missing.output


def test_fit_reads_and_writes_a_sweep_by_uri(tmp_path):
    """`raysweep fit s3://…` reads the tables where the sweep wrote them and writes fits and
    gains beside them: the same tables as through a plain path."""
    import pyarrow.parquet as pq

    for name in ("by_uri", "by_path"):
        write_sweep(tmp_path / name, sizes={"s": 100_000, "m": 1_000_000, "l": 10_000_000},
                    seeds=(0,))
    runner = CliRunner()
    by_uri = runner.invoke(app, ["fit", (tmp_path / "by_uri").as_uri(), "--n-boot", "10"],
                           env={"COLUMNS": "200"})
    by_path = runner.invoke(app, ["fit", str(tmp_path / "by_path"), "--n-boot", "10"],
                            env={"COLUMNS": "200"})
    assert by_uri.exit_code == 0, by_uri.output
    assert by_path.exit_code == 0, by_path.output
    for table in ("fits.parquet", "gains.parquet"):
        a = pq.read_table(tmp_path / "by_uri" / table).drop_columns(["source"]
            if table == "fits.parquet" else [])
        b = pq.read_table(tmp_path / "by_path" / table).drop_columns(["source"]
            if table == "fits.parquet" else [])
        assert a.num_rows > 0 and a.equals(b), table
    missing = runner.invoke(app, ["fit", (tmp_path / "none").as_uri()])
    assert missing.exit_code == 2 and "no such sweep directory" in missing.output
