"""The bad-input matrix (issue 11): every case is refused before any trial starts (before Ray),
with exit status 2 and one message naming the file (or option) and the key path, and nothing in
an existing sweep directory is overwritten: its files stay byte-identical. The CLI runs
in-process (`CliRunner`); each case exits before Ray is imported for a sweep.

A disk that fills during a write is the one fault met mid-run: it is simulated with a real tiny
file system (a 1 MiB tmpfs, when this user may mount one) or else with RLIMIT_FSIZE in a
subprocess: the stage is not marked done, and the tables stay readable."""

from __future__ import annotations

import copy
import json
import os
import resource
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.spec import SPACES_DIR

BASE = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())


def _set(path: str, value: Any) -> Callable[[dict], dict]:
    """An edit of the space: set the key at a dotted path (list items by index)."""
    def edit(raw: dict) -> dict:
        *parents, last = path.split(".")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[int(last) if isinstance(node, list) else last] = value
        return raw
    return edit


def _text(text: str) -> Callable[[dict], str]:
    return lambda raw: text


# (case id, edit of the space (or its whole text), the key path the message must name)
SPACE_CASES = [
    ("yaml-syntax", _text("name: x\nmodels: [\n  {name: a\n"), "<file>"),
    ("yaml-tab-indent", _text("name: x\nstages:\n\ttarget: 1\n"), "<file>"),
    ("yaml-not-a-mapping", _text("- name: x\n- models: []\n"), "<top>"),
    ("unknown-key-top", _set("bogus", 1), "bogus"),
    ("unknown-key-model", _set("models.0.bogus", 1), "models.0.bogus"),
    ("unknown-key-stage", _set("stages.target.bogus", 1), "stages.target.bogus"),
    ("unknown-key-eval", _set("stages.eval.bogus", 1), "stages.eval.bogus"),
    ("unknown-key-mixture", _set("mixtures.english.bogus", 1), "mixtures.english.bogus"),
    ("unknown-key-search", _set("search.bogus", 1), "search.bogus"),
    ("unknown-key-param", _set("search.params.lr_target.bogus", 1),
     "search.params.lr_target.bogus"),
    ("unknown-key-resources", _set("resources.bogus", 1), "resources.bogus"),
    ("unknown-key-faults", _set("faults.bogus", 1), "faults.bogus"),
    ("wrong-type-steps", _set("stages.target.steps", "ten"), "stages.target.steps"),
    ("wrong-type-workers", _set("resources.workers", [2]), "resources.workers"),
    ("wrong-type-retries", _set("faults.trial_retries", "twice"), "faults.trial_retries"),
    ("range-steps-zero", _set("stages.target.steps", 0), "stages.target.steps"),
    ("range-retries-negative", _set("faults.worker_restarts", -1), "faults.worker_restarts"),
    ("range-warmup", _set("stages.intermediate.warmup_frac", 1.5),
     "stages.intermediate.warmup_frac"),
    ("range-negative-lr", _set("search.params.lr_target", {"values": [-1e-3]}),
     "search.params.lr_target.values.0"),
    ("range-inverted-loguniform", lambda raw: _set("search.params.lr_target",
                                                   {"loguniform": [1e-2, 1e-4]})(
        _set("search.algorithm", "optuna")(raw)), "search.params.lr_target.loguniform"),
    ("unknown-task", _set("stages.target.tasks", ["no_such_task"]), "stages.target.tasks.0"),
    ("unknown-model", _set("models.0.tiny", "llama-huge"), "models.0.tiny"),
    ("unknown-language", _set("stages.eval.languages", ["xx"]), "stages.eval.languages.0"),
    ("unknown-mixture", _set("search.params.mixture", {"values": ["nope"]}),
     "search.params.mixture.values.0"),
    ("unknown-mixture-task", _set("mixtures.english.tasks", {"nope": 1.0}),
     "mixtures.english.tasks.nope"),
    ("empty-search", _set("search.params", {}), "search.params.lr_target"),
    ("empty-values", _set("search.params.lr_target", {"values": []}),
     "search.params.lr_target.values"),
    ("data-dir-missing", lambda raw: _set("data_dir", "/nonexistent/raysweep-data")(
        _set("stages.target.tasks", ["xnli"])(raw)), "data_dir"),
    ("data-dir-without-files", lambda raw: _set("data_dir", str(Path(__file__).parent))(
        _set("stages.target.tasks", ["xnli"])(raw)), "data_dir"),
    # tiny_scaling sets workers per model, so the key named is the model's
    ("impossible-workers", lambda raw: _set("resources.cluster_cpus", 2)(
        _set("models.1.workers", 4)(raw)), "models.1.workers"),
    ("impossible-gpus", lambda raw: _set("resources.cluster_gpus", 0)(
        _set("resources.gpus_per_worker", 1)(raw)), "models.0.workers"),
]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def existing(tmp_path) -> Path:
    """Storage holding a sweep named `existing` with rows, a space and a finished stage."""
    storage = tmp_path / "runs"
    sweep = storage / "existing"
    for rel, data in {"space.json": b'{"name": "existing"}', "launch.json": b"{}",
                      "trials/t1.parquet": os.urandom(64), "metrics/t1-target-0000.parquet":
                      os.urandom(64), "attempts/t1": b"1"}.items():
        (sweep / rel).parent.mkdir(parents=True, exist_ok=True)
        (sweep / rel).write_bytes(data)
    (storage / "stages" / "pretrain-abc").mkdir(parents=True)
    (storage / "stages" / "pretrain-abc" / "STATUS").write_text('{"status": "done"}')
    return storage


def _refused(args: list[str], file: str, key: str, storage: Path) -> None:
    before = _tree(storage)
    out = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert out.exit_code == 2, out.output
    assert out.output.count("error:") == 1, out.output
    assert f"{file}: {key}" in out.output.replace("\n", ""), out.output
    assert _tree(storage) == before  # nothing written, nothing overwritten


@pytest.mark.parametrize("edit, key", [c[1:] for c in SPACE_CASES],
                         ids=[c[0] for c in SPACE_CASES])
def test_a_bad_space_is_refused_before_ray(existing, tmp_path, edit, key):
    out = edit(copy.deepcopy(BASE))
    file = tmp_path / "bad.yaml"
    file.write_text(out if isinstance(out, str) else yaml.safe_dump(out))
    _refused(["launch", "--space", str(file), "--storage", str(existing), "--name", "existing"],
             str(file), key, existing)


def test_unwritable_storage_is_refused(existing, tmp_path):
    """Storage under a regular file: no user can create it (root included)."""
    blocker = existing / "trials-file"
    blocker.write_bytes(b"not a directory")
    file = tmp_path / "ok.yaml"
    file.write_text(yaml.safe_dump(BASE))
    _refused(["launch", "--space", str(file), "--storage", str(blocker / "runs")], "--storage",
             str(blocker / "runs"), existing)


def test_read_only_storage_is_refused(existing, tmp_path):
    """A read-only file system (a read-only tmpfs; root too gets EROFS there)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                            str(ro)], capture_output=True).returncode:
        pytest.skip("mounting a read-only tmpfs needs root")
    try:
        file = tmp_path / "ok.yaml"
        file.write_text(yaml.safe_dump(BASE))
        _refused(["launch", "--space", str(file), "--storage", str(ro / "runs")], "--storage",
                 str(ro / "runs"), existing)
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_resume_of_a_missing_directory(existing):
    missing = existing / "never-launched"
    _refused(["resume", str(missing)], str(missing), "<dir>", existing)


@pytest.mark.parametrize("content", [None, b"{not json", b'{"name": "x"}'],
                         ids=["no-space-json", "corrupt-space-json", "not-a-space"])
def test_resume_of_a_foreign_directory(existing, content):
    foreign = existing / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_bytes(b"someone else's")
    if content is not None:
        (foreign / "space.json").write_bytes(content)
    _refused(["resume", str(foreign)], str(foreign / "space.json"), "<file>", existing)


# --- a disk that fills during a write ---------------------------------------------------------

FULL_DISK = r"""
import os, signal, sys
from pathlib import Path
from raysweep.results.tables import MetricsWriter, load
from raysweep.run.store import StageStore

root = Path(sys.argv[1])
store = StageStore(root / "stages")
w = MetricsWriter(root / "sweep", "t1", {"sweep": "s", "model": "m"})
w.add(stage="pretrain", task="c", language="en", split="train", metric="loss", value=1.0, step=1)
w.flush("pretrain")  # small: fits
if sys.argv[2] == "rlimit":
    import resource
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG as an OSError, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
try:
    with store.claim("pretrain", "k", wait_s=0.05) as out:
        (out / "weights.bin").write_bytes(os.urandom(4 * 2**20))  # larger than the disk
    print("stage: written")
except OSError as e:
    print("stage:", e.__class__.__name__)
for i in range(400):  # rows until the disk is full
    w.add(stage="target", task="x", language="en", split="train", metric="loss",
          value=float(i), step=i)
try:
    w.flush("target-x")
    print("flush: written")
except OSError as e:
    print("flush:", e.__class__.__name__)
print("done:", store.is_done("pretrain", "k"))
print("rows:", load(root / "sweep", "metrics").num_rows)
"""


def _tiny_fs(tmp_path: Path) -> tuple[Path, str]:
    """A 1 MiB tmpfs where this user may mount one, else a directory under RLIMIT_FSIZE."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                        capture_output=True).returncode == 0 if os.geteuid() == 0 else False
    return mnt, "tmpfs" if ok else "rlimit"


def test_a_disk_that_fills_during_a_write(tmp_path):
    root, how = _tiny_fs(tmp_path)
    try:
        run = subprocess.run([sys.executable, "-c", FULL_DISK, str(root), how],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        lines = dict(line.split(": ", 1) for line in run.stdout.splitlines())
        # ENOSPC on the tmpfs, EFBIG under the rlimit: an OSError out of the stage, no crash
        assert lines["stage"] == "OSError"
        assert lines["done"] == "False"  # the stage is not marked done
        # The failed stage's private directory is removed (raysweep.run.store: fencing), so
        # the space it filled is free again (tmpfs), and the rlimit caps one file's size only:
        # either way the next small table file lands whole, beside the first.
        assert (lines["flush"], lines["rows"]) == ("written", "401")
        assert not [p for p in (root / "stages").rglob("*") if p.name.startswith(".pretrain")]
        leftovers = [p.name for p in (root / "sweep" / "metrics").iterdir()
                     if p.name.startswith(".")]
        assert leftovers == []  # no half-written temporary file stays behind
        assert not (root / "stages" / "pretrain-k" / "LEASE").exists()
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(root)], check=False)
