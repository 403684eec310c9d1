"""The pieces of bench/mfu.py that decide its figures: the gate that lets one variant run at a
time (on 2 real gloo ranks), the round order, and the arithmetic of ratios and MFU. The bench
itself (a local Ray, minutes on 2 cores) is run by hand: README, performance."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_mfu", ROOT / "bench" / "mfu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_mfu"] = module  # spawned ranks unpickle their target from here
    spec.loader.exec_module(module)
    return module


mfu = load_bench()


def test_gate_result_waits_for_done_and_abort_stops_every_wait(tmp_path):
    gate = mfu.Gate(tmp_path)
    gate.open("in_trial-0")
    assert gate.wait(["bare-0", "in_trial-0"], timeout=1) == "in_trial-0"
    threading.Timer(0.2, gate.done, args=("in_trial-0", 0.125)).start()
    assert gate.result("in_trial-0", timeout=5) == 0.125
    with pytest.raises(mfu.Aborted, match="no result"):
        gate.result("bare-0", timeout=0.1)
    with pytest.raises(mfu.Aborted, match="rank 1 died"):  # the other end gone: no 15-min hang
        gate.result("bare-0", timeout=5, alive=lambda: "rank 1 died")
    gate.abort("driver: boom")
    with pytest.raises(mfu.Aborted, match="boom"):
        gate.wait(["bare-0"], timeout=5)
    with pytest.raises(mfu.Aborted, match="boom"):
        gate.result("bare-0", timeout=5)


def test_rounds_rotate_so_no_variant_is_always_first():
    names = ["bare", "in_trial", "trainer"]
    orders = [mfu.rotated(names, r) for r in range(3)]
    assert [o[0] for o in orders] == names and all(sorted(o) == names for o in orders)


class Sleeper:
    """A loop whose step takes a known time (rank-dependent, as a slow rank would)."""

    def __init__(self, seconds: float):
        self.seconds, self.steps = seconds, 0

    def run(self, steps: int) -> None:
        self.steps += steps
        time.sleep(self.seconds * steps)


def _serve_rank(rank: int, port: int, gate_dir: str, opts: dict, reports: str) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    bench = sys.modules["bench_mfu"] if "bench_mfu" in sys.modules else load_bench()
    seen = []
    try:
        loops = {"a": Sleeper(0.01), "b": Sleeper(0.02 if rank == 0 else 0.08)}
        bench.serve("side", loops, opts, bench.Gate(gate_dir), torch.device("cpu"),
                    report=seen.append)
        assert loops["a"].steps == opts["warmup"] + opts["steps"] * opts["rounds"]
    finally:
        Path(reports, f"{rank}.json").write_text(json.dumps(seen))
        dist.destroy_process_group()


def test_serve_times_only_the_variant_the_driver_opened(tmp_path):
    """Two gloo ranks serve two variants; the driver opens them one at a time in rotated order.
    Each time is the slower rank's (the step ends when every rank has finished), and every rank
    reports each round, as Train wants."""
    gate = mfu.Gate(tmp_path / "gate")
    opts = {"warmup": 1, "steps": 2, "rounds": 2, "profile": False}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_serve_rank, args=(r, port, str(gate.root), opts, str(tmp_path)))
             for r in range(2)]
    for p in procs:
        p.start()

    def alive() -> str | None:
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        return f"exit codes {dead}" if dead else None

    try:
        ready = gate.result("side-ready", 120, alive)
        assert len({f["pid"] for f in ready["ranks"]}) == 2  # every rank's facts
        assert not (tmp_path / "gate" / "a-0.json").exists()  # nothing runs unopened
        times = {"a": [], "b": []}
        for r in range(2):
            for v in mfu.rotated(["a", "b"], r):
                gate.open(f"{v}-{r}")
                times[v].append(gate.result(f"{v}-{r}", 60, alive))
        gate.result("side-end", 60, alive)
    finally:
        for p in procs:
            p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert all(0.01 <= t["s"] < 0.05 for t in times["a"]), times
    # The slow rank's time (less the few ms by which the ranks leave a barrier apart).
    assert all(0.06 <= t["s"] < 0.2 for t in times["b"]), times
    assert all(t["cpu_s"] < 0.02 for t in times["a"] + times["b"]), times  # sleeping is free
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"{rank}.json").read_text())
        assert [(x["variant"], x["round"]) for x in seen] == [("a", 0), ("b", 0), ("b", 1),
                                                              ("a", 1)]
        assert [x["s_per_step"] for x in seen] == [times[v][r]["s"] for v, r in
                                                   [("a", 0), ("b", 0), ("b", 1), ("a", 1)]]


def test_ratios_are_medians_of_per_round_ratios_and_mfu_null_on_cpu():
    # Round 2 is 3x slower for both (the machine, not the variant): a per-round ratio ignores it.
    times = {"bare": [0.10, 0.30, 0.10], "in_trial": [0.11, 0.33, 0.125],
             "trainer": [0.10, 0.30, 0.11]}
    cpu = {"bare": [0.2, 0.2, 0.2], "in_trial": [0.25, 0.2, 0.2], "trainer": [0.2, 0.2, 0.2]}
    out = {"times": times, "cpu": cpu, "device_name": "cpu", "ray_background_cores": 0.2,
           "load_1min": [1.0, 1.0], "threads": {}, "peak_gib": None}
    fig = mfu.summarize(out, {"device": "cpu", "precision": "fp32", "rounds": 3, "steps": 4}, 2)
    # (The ratio of medians, 0.10 / 0.125 = 0.8, would let round 3's noise decide.)
    assert fig["in_trial_over_bare"] == pytest.approx(1 / 1.1, abs=1e-4)
    assert fig["trainer_over_bare"] == 1.0
    assert fig["in_trial_over_trainer"] == pytest.approx(0.10 / 0.11, abs=1e-4)
    assert fig["in_trial_over_bare_cpu"] == 1.0 and fig["cpu_ms_per_step"]["in_trial"][0] == 250
    assert fig["mfu"] is None and fig["device"] == "cpu x 2"
    shape = mfu.CPU_SHAPE
    assert fig["tokens_per_s"]["bare"] == pytest.approx(
        shape["batch"] * shape["seq"] * 2 / 0.10, rel=1e-6)
    json.dumps(fig)  # the last line must serialize


def test_mfu_on_a_card_is_achieved_flops_over_its_bf16_peak():
    assert mfu.peak_flops("NVIDIA H200") == 989e12
    assert mfu.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert mfu.peak_flops("NVIDIA H100 80GB HBM3") == 989e12  # the SXM card's name
    assert mfu.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert mfu.peak_flops("Tesla T4") is None
    out = {"times": {"bare": [0.5], "in_trial": [0.5], "trainer": [0.5]},
           "cpu": {"bare": [0.5], "in_trial": [0.5], "trainer": [0.5]},
           "device_name": "NVIDIA H200", "ray_background_cores": 0.0, "load_1min": [0, 0],
           "threads": {}, "peak_gib": None}
    fig = mfu.summarize(out, {"device": "cuda", "precision": "fp32", "rounds": 1, "steps": 1}, 1)
    shape = mfu.GPU_SHAPE
    tps = shape["batch"] * shape["seq"] / 0.5
    assert fig["precision"] == "bf16"
    assert fig["mfu"] == pytest.approx(tps * shape["args"].flops_per_token(shape["seq"]) / 989e12,
                                       abs=1e-4)


def test_without_ray_the_mfu_is_the_trainers_and_no_in_trial_ratio_is_made_up():
    """`--no-ray` (a GPU machine without Ray): bare and trainer only; the MFU is the trainer's
    step (raysweep's, outside a Ray trial) and every in-trial figure is null, not a guess."""
    out = {"times": {"bare": [0.4, 0.5], "trainer": [0.5, 0.5]},
           "cpu": {"bare": [0.4, 0.5], "trainer": [0.5, 0.5]},
           "device_name": "NVIDIA H200", "ray_background_cores": 0.0, "load_1min": [0, 0],
           "threads": {}, "peak_gib": None}
    fig = mfu.summarize(out, {"device": "cuda", "precision": "fp32", "rounds": 2, "steps": 1}, 1)
    assert fig["in_trial_over_bare"] is None and fig["in_trial_over_trainer"] is None
    assert fig["mfu_of"] == "trainer" and fig["mfu"] == fig["mfu_trainer"]
    assert fig["trainer_over_bare"] == pytest.approx((0.8 + 1.0) / 2, abs=1e-4)
    shape = mfu.GPU_SHAPE
    tps = shape["batch"] * shape["seq"] / 0.5
    assert fig["mfu"] == pytest.approx(tps * shape["args"].flops_per_token(shape["seq"]) / 989e12,
                                       abs=1e-4)
    json.dumps(fig)
