"""The stage store: one computation per key across processes, status written last, dead leases
broken, failures leave nothing marked done."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from raysweep.run.store import LEASE, StageStore, stage_key


def test_key_hashes_whole_normalized_config():
    a = {"stage": "pretrain", "lr": 1e-3, "model": {"tiny": "x", "shape": {"h": 32}}}
    b = {"model": {"shape": {"h": 32}, "tiny": "x"}, "lr": 1e-3, "stage": "pretrain"}
    assert stage_key(a) == stage_key(b)  # key order does not matter
    assert stage_key(a) != stage_key({**a, "model": {"tiny": "x", "shape": {"h": 64}}})


def _claimer(root: str, log: str, hold: float) -> None:
    store = StageStore(Path(root))
    with store.claim("pretrain", "k1", wait_s=0.05) as out:
        if out is not None:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(hold)
            (out / "weights.bin").write_bytes(b"x" * 1000)


def test_concurrent_claims_compute_once(tmp_path):
    log = tmp_path / "computed.log"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_claimer, args=(str(tmp_path / "stages"), str(log), 1.0))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(log.read_text().split()) == 1  # one process computed, three waited and loaded
    store = StageStore(tmp_path / "stages")
    assert store.is_done("pretrain", "k1")
    assert (store.path("pretrain", "k1") / "weights.bin").stat().st_size == 1000
    assert not (store.path("pretrain", "k1") / LEASE).exists()


def test_failure_marks_nothing_done(tmp_path):
    store = StageStore(tmp_path)
    with pytest.raises(RuntimeError):
        with store.claim("intermediate", "k2") as out:
            assert out is not None
            raise RuntimeError("worker died")
    assert not store.is_done("intermediate", "k2")
    assert not (store.path("intermediate", "k2") / LEASE).exists()
    with store.claim("intermediate", "k2") as out:  # the next trial computes it
        assert out is not None


def test_dead_lease_is_broken(tmp_path):
    store = StageStore(tmp_path, ttl=0.5)
    out = store.path("pretrain", "k3")
    out.mkdir(parents=True)
    (out / LEASE).write_text("{}")  # a holder that died without a heartbeat
    past = time.time() - 10
    os.utime(out / LEASE, (past, past))
    with store.claim("pretrain", "k3", wait_s=0.05) as got:
        assert got is not None
    assert store.is_done("pretrain", "k3")


def test_live_lease_is_waited_for(tmp_path):
    store = StageStore(tmp_path, ttl=60)
    out = store.path("pretrain", "k4")
    out.mkdir(parents=True)
    (out / LEASE).write_text("{}")
    with pytest.raises(TimeoutError):
        with store.claim("pretrain", "k4", wait_s=0.05, timeout_s=0.3):
            pass
