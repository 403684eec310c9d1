"""bench/memory_estimate.py --device cuda, checked on a machine without a GPU: its training
steps (bf16 FSDP2 on a 1-rank group) run on a gloo group at a tiny shape, without Ray, optuna or
duckdb importable (the GPU machine has none of them); the driver's JSON and failure handling run
with the GPU subprocess stubbed; and the CPU path at a tiny shape runs end to end without them."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "memory_estimate.py"
BLOCK = "import sys\nsys.modules['ray'] = sys.modules['optuna'] = sys.modules['duckdb'] = None\n"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_memory_estimate", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def without_ray(tmp_path: Path) -> dict:
    """An environment whose Python processes (children too) cannot import ray, optuna, duckdb."""
    (tmp_path / "sitecustomize.py").write_text(BLOCK)
    path = os.pathsep.join(p for p in (str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH"))
                           if p)
    return {**os.environ, "PYTHONPATH": path}


def test_cuda_steps_run_without_ray_optuna_duckdb(tmp_path):
    """Every CUDA case's steps, at the tiny shape on a 1-rank gloo group (the nccl group's
    stand-in), in a fresh process where ray, optuna and duckdb cannot be imported."""
    code = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("b", {str(BENCH)!r})
b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
out = {{c: b._measure_cuda(c, b.TINY_SHAPE, device="cpu") for c in b.CUDA_CASES}}
assert all(sys.modules.get(m) is None for m in ("ray", "optuna", "duckdb"))
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=without_ray(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == set(bench.CUDA_CASES)
    for r in out.values():  # (one process for every case: its RSS peaks are not each case's)
        assert math.isfinite(r["measured_gb"]) and math.isfinite(r["loss"]), r


def run_main(monkeypatch, argv, fake_run):
    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["memory_estimate.py", *argv])
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            bench.main()
        except SystemExit as e:
            code = e.code
    return json.loads(out.getvalue().strip().splitlines()[-1]), err.getvalue(), code


def test_cuda_driver_json_has_the_cpu_keys_plus_device(monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append((cmd, kw))
        got = {"measured_gb": 40.0, "reserved_gb": 42.0, "loss": 11.9,
               "device_name": "NVIDIA H200", "torch": "2.11.0"}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(got) + "\n", "")

    result, err, code = run_main(monkeypatch, ["--device", "cuda"], fake_run)
    assert code == 0 and result["device"] == "cuda"
    assert set(result) == {"cases", "max_abs_error", "device"}
    assert list(result["cases"]) == list(bench.CUDA_CASES)
    for name, r in result["cases"].items():
        assert set(r) == {"measured_gb", "estimate_gb", "ratio", "breakdown"}
        est = bench.estimate_memory(bench.CUDA_SHAPE, bench.stage_of(name, "cuda"), 1, gpu=True)
        assert est.precision == "bf16" and r["estimate_gb"] == round(est.total, 4)
        assert r["ratio"] == round(est.total / 40.0, 3)
    assert result["max_abs_error"] == max(abs(r["ratio"] - 1) for r in result["cases"].values())
    # Each case in its own interpreter, on the GPU, within the run's time budget.
    for (cmd, kw), name in zip(calls, bench.CUDA_CASES):
        assert cmd[2:] == ["--device", "cuda", "--measure", name, "--shape", "default"]
        assert 0 < kw["timeout"] <= bench.CUDA_DEADLINE_S
    assert "NVIDIA H200" in err


def test_a_failed_cuda_case_reports_its_error_and_the_others_still_run(monkeypatch):
    def fake_run(cmd, **kw):
        if "lm-1b" in cmd:
            return subprocess.CompletedProcess(cmd, 1, "", "torch.OutOfMemoryError: CUDA oom\n")
        if "cls-1b" in cmd:
            raise subprocess.TimeoutExpired(cmd, kw["timeout"], stderr=b"stuck")
        got = {"measured_gb": 20.0, "reserved_gb": 21.0, "loss": 11.9, "device_name": "x",
               "torch": "2.11.0"}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(got) + "\n", "")

    result, err, code = run_main(monkeypatch, ["--device", "cuda"], fake_run)
    assert code == 1
    cases = result["cases"]
    assert "OutOfMemoryError" in cases["lm-1b"]["error"] and cases["lm-1b"]["ratio"] is None
    assert "timed out" in cases["cls-1b"]["error"]
    assert cases["lm-1b-ac"]["measured_gb"] == 20.0
    assert result["max_abs_error"] == max(abs(cases[c]["ratio"] - 1)
                                          for c in ("lm-1b-ac", "lm-1b-sel"))


def test_cases_belong_to_their_device(monkeypatch):
    for argv in (["--device", "cuda", "--case", "lm-1"], ["--case", "lm-1b"]):
        monkeypatch.setattr(sys, "argv", ["memory_estimate.py", *argv])
        with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(io.StringIO()):
            bench.main()
        assert e.value.code == 2


def test_cpu_path_at_a_tiny_shape_runs_end_to_end_without_ray(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--shape", "tiny", "--case", "cls-1",
                           "--case", "lm-1"], capture_output=True, text=True, timeout=600,
                          env=without_ray(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) == {"cases", "max_abs_error"}
    for name, r in result["cases"].items():
        assert set(r) == {"measured_gb", "estimate_gb", "ratio", "breakdown"}
        est = bench.estimate_memory(bench.TINY_SHAPE, bench.stage_of(name), 1, gpu=False)
        assert r["measured_gb"] > 0 and r["estimate_gb"] == round(est.total, 4)
