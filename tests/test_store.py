"""The stage store: one computation per key across processes, status written last, dead leases
broken by exactly one waiter, failures leave nothing marked done. Every race is run with real
processes (forked, real files, real signals)."""

from __future__ import annotations

import multiprocessing as mp
import json
import os
import signal
import time
from pathlib import Path

import pytest

from raysweep.run.store import LEASE, STATUS, StageStore, stage_key


def test_key_hashes_whole_normalized_config():
    a = {"stage": "pretrain", "lr": 1e-3, "model": {"tiny": "x", "shape": {"h": 32}}}
    b = {"model": {"shape": {"h": 32}, "tiny": "x"}, "lr": 1e-3, "stage": "pretrain"}
    assert stage_key(a) == stage_key(b)  # key order does not matter
    assert stage_key(a) != stage_key({**a, "model": {"tiny": "x", "shape": {"h": 64}}})


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.02)


def _claimer(root: str, log: str, hold: float, start=None, ttl: float = 120.0,
             hold_until: str | None = None) -> None:
    """Claim pretrain/k1; if we compute, log our pid, hold for `hold` s (or until `hold_until`
    exists), then write the output."""
    if start is not None:
        start.wait()
    store = StageStore(Path(root), ttl=ttl, heartbeat=min(10.0, ttl / 5))
    with store.claim("pretrain", "k1", wait_s=0.05) as out:
        if out is not None:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            Path(log + ".in").touch()
            if hold_until:
                _wait_for(Path(hold_until))
            time.sleep(hold)
            (out / "weights.bin").write_bytes(b"x" * 1000)


def _run(target, *args_list, **kw) -> list:
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=target, args=args, kwargs=kw) for args in args_list]
    for p in procs:
        p.start()
    return procs


def _computed(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _dead_lease(store: StageStore, key: str = "k1", token: str = "old-holder") -> Path:
    out = store.path("pretrain", key)
    out.mkdir(parents=True)
    (out / LEASE).write_text(json.dumps({"token": token}))  # a holder that died long ago
    past = time.time() - 1000
    os.utime(out / LEASE, (past, past))
    return out


def _assert_done_once(root: Path, log: Path) -> None:
    assert len(_computed(log)) == 1, _computed(log)  # one process computed, the rest loaded
    store = StageStore(root)
    assert store.is_done("pretrain", "k1")
    assert (store.path("pretrain", "k1") / "weights.bin").stat().st_size == 1000
    assert not (store.path("pretrain", "k1") / LEASE).exists()


@pytest.mark.parametrize("dead_lease", [False, True], ids=["fresh", "dead-lease"])
def test_many_claimers_at_once_compute_once(tmp_path, dead_lease):
    """Eight processes released at the same instant on one key: on a fresh key they race on
    O_EXCL; behind a dead lease they race to take it over, and only one may."""
    root, log = tmp_path / "stages", tmp_path / "computed.log"
    if dead_lease:
        _dead_lease(StageStore(root))
    start = mp.get_context("fork").Event()
    procs = _run(_claimer, *[(str(root), str(log), 0.5, start)] * 8)
    time.sleep(1)  # every process is waiting on the event
    start.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    _assert_done_once(root, log)


def test_sigkilled_holder_is_taken_over_by_exactly_one_waiter(tmp_path):
    """A holder SIGKILLed mid-hold (its heartbeat stops, its lease stays): of four waiters, one
    takes over and computes. Its pid is gone on this host, so nobody waits out the ttl."""
    root, log = tmp_path / "stages", tmp_path / "computed.log"
    holder, = _run(_claimer, (str(root), str(log), 600.0))
    _wait_for(Path(str(log) + ".in"))
    waiters = _run(_claimer, *[(str(root), str(log), 0.2)] * 4)
    time.sleep(2)
    assert _computed(log) == [str(holder.pid)]  # the live holder is waited for
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    t0 = time.monotonic()
    for p in waiters:
        p.join(120)
        assert p.exitcode == 0
    assert time.monotonic() - t0 < 60  # well under the 120 s ttl
    computed = _computed(log)
    assert computed[0] == str(holder.pid) and len(computed) == 2, computed
    log.write_text(computed[1] + "\n")
    _assert_done_once(root, log)


class PausingStore(StageStore):
    """Pauses a waiter right after it judged the lease dead, the first time: the interleaving
    of issue 11, forced."""

    def _dead(self, lease: Path):
        token = super()._dead(lease)
        judged = Path(self.root) / "judged"
        if token is not None and not judged.exists():
            judged.touch()
            _wait_for(Path(self.root) / "go")
        return token


def _pausing_claimer(root: str, log: str) -> None:
    with PausingStore(Path(root)).claim("pretrain", "k1", wait_s=0.05) as out:
        if out is not None:
            with open(log, "a") as f:
                f.write(f"{os.getpid()}\n")
            (out / "weights.bin").write_bytes(b"x" * 1000)


def test_forced_interleaving_two_waiters_one_dead_lease(tmp_path):
    """A judges the old lease dead and stalls; B breaks it and takes a fresh lease; A resumes.
    A must not rename B's fresh lease away (it did: both computed)."""
    root, log = tmp_path / "stages", tmp_path / "computed.log"
    _dead_lease(StageStore(root))
    a, = _run(_pausing_claimer, (str(root), str(log)))
    _wait_for(root / "judged")
    b, = _run(_claimer, (str(root), str(log), 0.0), hold_until=str(tmp_path / "release"))
    _wait_for(Path(str(log) + ".in"))
    (root / "go").touch()  # A goes on from its stale judgement
    time.sleep(2)
    assert _computed(log) == [str(b.pid)]
    lease = json.loads((StageStore(root).path("pretrain", "k1") / LEASE).read_text())
    assert lease["pid"] == b.pid  # B's lease is where it was
    (tmp_path / "release").touch()
    for p in (a, b):
        p.join(60)
        assert p.exitcode == 0
    (root / "judged").unlink()
    (root / "go").unlink()
    _assert_done_once(root, log)


def test_paused_holder_loses_its_lease_and_leaves_the_new_one(tmp_path):
    """A holder stopped (SIGSTOP) past the ttl is taken over; when it wakes it must not mark
    the output done, nor refresh or unlink the new holder's lease: it fails with LeaseLost."""
    root, log = tmp_path / "stages", tmp_path / "computed.log"
    h, = _run(_claimer, (str(root), str(log), 0.0), ttl=1.0, hold_until=str(tmp_path / "go-h"))
    _wait_for(Path(str(log) + ".in"))
    Path(str(log) + ".in").unlink()
    os.kill(h.pid, signal.SIGSTOP)
    w, = _run(_claimer, (str(root), str(log), 0.0), ttl=1.0, hold_until=str(tmp_path / "go-w"))
    _wait_for(Path(str(log) + ".in"))  # W took over the stale lease
    lease = StageStore(root).path("pretrain", "k1") / LEASE
    assert json.loads(lease.read_text())["pid"] == w.pid
    os.kill(h.pid, signal.SIGCONT)
    (tmp_path / "go-h").touch()
    h.join(60)
    assert h.exitcode != 0  # LeaseLost
    assert json.loads(lease.read_text())["pid"] == w.pid  # H left W's lease alone
    assert not (lease.parent / STATUS).exists()
    # Fencing: H wrote its output before it found out, into its private directory only.
    assert not (lease.parent / "weights.bin").exists()
    (tmp_path / "go-w").touch()
    w.join(60)
    assert w.exitcode == 0
    assert (lease.parent / "weights.bin").stat().st_size == 1000  # W's, committed
    assert not list(root.glob(".pretrain-k1.*"))  # no private directory left behind
    assert json.loads((lease.parent / STATUS).read_text())["holder"].startswith(
        f"{os.uname().nodename}-{w.pid}-")


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


def _waiting_rank(rank: int, root: str, port: int, out: str) -> None:
    """One of 2 gloo ranks (collective timeout 3 s) claiming a key another trial holds."""
    from datetime import timedelta

    import torch.distributed as dist

    from raysweep.run.stages import claim_together
    from raysweep.train.ranks import Ranks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=3))
    try:
        with claim_together(Ranks.current(), StageStore(Path(root)), "pretrain", "kw") as todo:
            Path(out, f"rank{rank}").write_text(repr(todo))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned gloo processes
def test_ranks_waiting_on_a_lease_outlast_the_collective_timeout(tmp_path):
    """Rank 0 waits 8 s on another trial's live lease while rank 1 waits in a broadcast whose
    timeout is 3 s: rank 0's "still waiting" at each poll keeps it alive. When the other trial
    marks the key done, both ranks get None (load it)."""
    from raysweep.run.store import _host, _write_json_atomic

    from test_multinode import free_port

    root = tmp_path / "stages"
    out = StageStore(root).path("pretrain", "kw")
    out.mkdir(parents=True)
    (out / LEASE).write_text(json.dumps({"token": "other", "host": _host(), "pid": os.getpid()}))
    ctx, port = mp.get_context("spawn"), free_port()
    procs = [ctx.Process(target=_waiting_rank, args=(r, str(root), port, str(tmp_path)))
             for r in range(2)]
    for p in procs:
        p.start()
    time.sleep(8)
    os.utime(out / LEASE)  # (the other trial's heartbeat)
    _write_json_atomic(out / STATUS, {"status": "done"})
    (out / LEASE).unlink()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [(tmp_path / f"rank{r}").read_text() for r in range(2)] == ["None", "None"]
