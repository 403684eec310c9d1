"""The memory estimate (`raysweep.plan.memory`) against the measured peak of real training steps
on CPU: each case runs two AdamW steps of a LLaMA-shaped TaskModel (the project's model, loss
and optimizer) in a fresh process, fp32, on 1 rank or on 2 gloo FSDP2 ranks, and reports each
rank's peak RSS growth (VmHWM minus the RSS before the model was built) beside the estimate.

    python bench/memory_estimate.py                 # every case
    python bench/memory_estimate.py --case lm-1     # one
    python bench/memory_estimate.py --shape tiny    # a tiny shape: checks the bench runs, fast

On one NVIDIA GPU (`--device cuda`, its own cases): a 1.2B LLaMA shape (1.5B with an LM head;
hidden 2048, 16 layers, vocabulary 128256), 4 x 2048 tokens, trained as raysweep trains on GPUs:
bf16 FSDP2 (`MixedPrecisionPolicy`) on a 1-rank nccl group, against the estimate at `gpu=True`;
measured: `torch.cuda.max_memory_allocated()` minus `torch.cuda.memory_allocated()` before the
model is built. About a minute on an H200; it needs torch, transformers and this checkout's
own imports (pydantic, pyyaml, numpy), not Ray, optuna or duckdb:

    python bench/memory_estimate.py --device cuda                   # every CUDA case
    python bench/memory_estimate.py --device cuda --case lm-1b-ac   # one

Last line: {"cases": {name: {"measured_gb", "estimate_gb", "ratio"}}, "max_abs_error": ...}
(with --device cuda also "device", and a case that failed has "error" and no measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysweep.model.args import LlamaArgs  # noqa: E402
from raysweep.plan.memory import estimate_memory  # noqa: E402
from raysweep.plan.stages import PretrainConfig, TargetConfig  # noqa: E402

# Big enough that the parameters, optimizer states and activations (hundreds of MB) dwarf what
# the allocator and autograd's first step add; small enough for a 2-core machine.
SHAPE = LlamaArgs(hidden=512, intermediate=1376, layers=4, heads=8, kv_heads=4, vocab=8000,
                  max_positions=512)
CASES = {  # name -> (head, micro batch per rank, seq len, checkpointing, ranks)
    "cls-1": ("seq_cls", 8, 256, "none", 1),
    "states-1": ("seq_cls", 1, 256, "none", 1),  # weights, gradients, AdamW states dominate
    "cls-ac-1": ("seq_cls", 8, 256, "full", 1),
    "lm-1": ("causal_lm", 4, 256, "none", 1),
    "cls-2": ("seq_cls", 8, 256, "none", 2),
}
# --device cuda: a LLaMA-3.2-1B-like shape (1.2B; 1.5B with an LM head): each term is GBs.
CUDA_SHAPE = LlamaArgs(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8,
                       vocab=128256, max_positions=2048)
CUDA_CASES = {  # as CASES; bf16, one rank. The first two matter most: they run first.
    "lm-1b": ("causal_lm", 4, 2048, "none", 1),
    "lm-1b-ac": ("causal_lm", 4, 2048, "full", 1),
    "cls-1b": ("seq_cls", 4, 2048, "none", 1),  # no vocabulary-wide logits, no LM head states
    "lm-1b-sel": ("causal_lm", 4, 2048, "selective", 1),
}
# --shape tiny: any case at a tiny shape (seconds on CPU), to check that the bench runs.
TINY_SHAPE = LlamaArgs(hidden=64, intermediate=176, layers=2, heads=4, kv_heads=2, vocab=512,
                       max_positions=2048)
CUDA_DEADLINE_S = 240  # all CUDA cases (a GPU run is one command with a 5-minute limit)


def cases_of(device: str) -> dict:
    return CUDA_CASES if device == "cuda" else CASES


def shape_of(device: str, shape: str = "default") -> LlamaArgs:
    return TINY_SHAPE if shape == "tiny" else CUDA_SHAPE if device == "cuda" else SHAPE


def stage_of(case: str, device: str = "cpu"):
    head, micro, seq, ac, ranks = cases_of(device)[case]
    common = dict(data_dir=None, parent=None, model=None, lr=1e-4, steps=2,
                  batch_size=micro * ranks, max_length=seq, log_every=1, seed=0,
                  precision="bf16" if device == "cuda" else "fp32",
                  activation_checkpointing=ac, micro_batch_size=None,
                  lora=None)
    if head == "causal_lm":
        return PretrainConfig(**common, corpus="toy_lm")
    return TargetConfig(**common, tasks=["toy"], warmup_frac=0.1, eval_every=2)


def _rss_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError(field)


def _toy_task(head: str):
    from raysweep.tasks.base import Task

    return Task(name="toy", category="lm" if head == "causal_lm" else "classification",
                head=head, metric="accuracy", languages=("en",), roles=frozenset({"target"}),
                source="bench", loader=lambda *a: None, num_labels=2)


def _toy_batch(shape: LlamaArgs, micro: int, seq: int, seed: int, device: str = "cpu") -> dict:
    import torch

    g = torch.Generator().manual_seed(seed)
    batch = {"input_ids": torch.randint(5, shape.vocab, (micro, seq), generator=g),
             "attention_mask": torch.ones(micro, seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (micro,), generator=g)}
    return {k: v.to(device) for k, v in batch.items()}


def _two_steps(shape: LlamaArgs, head: str, mesh, config, batch: dict, device: str = "cpu"):
    """The project's model built on `device` (TaskModel + a toy head, `parallelize`d with
    `config`), then two AdamW steps on `batch`; the last loss. AdamW's states exist from the
    first step on, so the second step is the peak."""
    import torch

    from raysweep.model.checkpoint import init_backbone
    from raysweep.model.parallelize import parallelize
    from raysweep.model.task_model import TaskModel
    from raysweep.train.loop import Optim, make_optimizer, task_loss

    # (on CPU, no device mode: the build is exactly the CPU cases' as before)
    with torch.device(device) if device != "cpu" else contextlib.nullcontext():
        model = TaskModel(init_backbone(shape, seed=0))
        model.add_head(_toy_task(head))
    model = parallelize(model, mesh, config)
    opt, _ = make_optimizer(model, Optim(lr=1e-4, steps=2, warmup_frac=0.1))
    for _ in range(2):
        loss = task_loss(model, "toy", batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return loss


def _measure(case: str, rank: int = 0, world: int = 1, port: int = 0, out=None,
             shape: LlamaArgs = SHAPE) -> float:
    """Two training steps; this rank's peak RSS growth in GB."""
    import torch

    from raysweep.model.args import ParallelConfig
    from raysweep.model.parallelize import device_mesh

    torch.set_num_threads(1)
    if world > 1:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    head, micro, seq, ac, _ = CASES[case]
    batch = _toy_batch(shape, micro, seq, seed=rank)
    base = _rss_gb("VmRSS")
    _two_steps(shape, head, device_mesh(), ParallelConfig(activation_checkpointing=ac), batch)
    peak = _rss_gb("VmHWM") - base
    if out is not None:
        out.put((rank, peak))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return peak


def _measure_ranks(case: str, shape: LlamaArgs = SHAPE) -> float:
    """The largest peak over the case's ranks (gloo FSDP2 when there are several)."""
    world = CASES[case][4]
    if world == 1:
        return _measure(case, shape=shape)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_measure, args=(case, r, world, port, out, shape))
             for r in range(world)]
    for p in procs:
        p.start()
    peaks = [out.get(timeout=600)[1] for _ in procs]
    for p in procs:
        p.join()
    return max(peaks)


def _measure_cuda(case: str, shape: LlamaArgs = CUDA_SHAPE, device: str = "cuda") -> dict:
    """Two training steps as raysweep trains on one GPU (a 1-rank nccl group, so FSDP2 with
    bf16 compute); the growth of `torch.cuda.max_memory_allocated()` over the allocated memory
    before the model was built, in GB. `device="cpu"` runs the same steps on a 1-rank gloo group
    and reports the peak RSS growth instead: this path's check on a machine without a GPU."""
    import torch
    import torch.distributed as dist

    from raysweep.model.args import ParallelConfig
    from raysweep.model.parallelize import device_mesh

    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(0)
        torch.cuda.init()
        dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1,
                                device_id=torch.device("cuda", 0))
    else:
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    mesh = device_mesh()
    assert mesh is not None and mesh.device_type == device, mesh
    head, micro, seq, ac, _ = CUDA_CASES[case]
    batch = _toy_batch(shape, micro, seq, seed=0, device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_gb("VmRSS") * 1e9
    # the CPU cases' build, allocated on the GPU, in bf16
    loss = _two_steps(shape, head, mesh, ParallelConfig(precision="bf16",
                                                        activation_checkpointing=ac),
                      batch, device)
    if cuda:
        torch.cuda.synchronize()
        peak, reserved = torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
        name = torch.cuda.get_device_name()
    else:
        peak, reserved, name = _rss_gb("VmHWM") * 1e9, float("nan"), "cpu"
    result = {"measured_gb": (peak - base) / 1e9, "reserved_gb": reserved / 1e9,
              "loss": float(loss), "device_name": name, "torch": torch.__version__}
    dist.destroy_process_group()
    return result


def run_case(case: str, device: str = "cpu", shape: str = "default",
             timeout: float | None = None) -> dict:
    """Measure one case in a fresh interpreter (so no earlier case's memory counts)."""
    if device == "cuda":
        return _run_cuda_case(case, shape, timeout)
    cmd = [sys.executable, __file__, "--measure", case]
    if shape != "default":
        cmd += ["--shape", shape]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["measured_gb"]
    workers = CASES[case][4]
    est = estimate_memory(shape_of(device, shape), stage_of(case), workers, gpu=False)
    return {"measured_gb": round(measured, 4), "estimate_gb": round(est.total, 4),
            "ratio": round(est.total / measured, 3), "breakdown": est.breakdown()}


def _run_cuda_case(case: str, shape: str, timeout: float | None) -> dict:
    """As `run_case`, on the GPU; a case that fails (or runs out of time) reports its error
    instead of a measurement, so one bad case does not cost the others' figures."""
    est = estimate_memory(shape_of("cuda", shape), stage_of(case, "cuda"), CUDA_CASES[case][4],
                          gpu=True)
    row = {"measured_gb": None, "estimate_gb": round(est.total, 4), "ratio": None,
           "breakdown": est.breakdown()}
    if timeout is not None and timeout <= 0:
        return {**row, "error": f"not run: the {CUDA_DEADLINE_S}s budget was spent"}
    cmd = [sys.executable, __file__, "--device", "cuda", "--measure", case, "--shape", shape]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
        print(f"{case}: timed out after {timeout:.0f}s\n{(tail or '')[-3000:]}", file=sys.stderr)
        return {**row, "error": f"timed out after {timeout:.0f}s"}
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"{case}: exit {proc.returncode} after {wall:.0f}s\n{proc.stderr[-3000:]}",
              file=sys.stderr)
        lines = proc.stderr.strip().splitlines()
        return {**row, "error": f"exit {proc.returncode}: {lines[-1] if lines else ''}"[:500]}
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    measured = got["measured_gb"]
    print(f"{case}: {wall:.0f}s on {got['device_name']} (torch {got['torch']}), peak reserved "
          f"{got['reserved_gb']:.3f} GB, last loss {got['loss']:.3f}", file=sys.stderr)
    return {**row, "measured_gb": round(measured, 4), "ratio": round(est.total / measured, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cpu: fp32 steps, peak RSS; cuda: bf16 FSDP2 steps on one GPU, peak "
                    "torch.cuda.max_memory_allocated (its own, bigger cases)")
    ap.add_argument("--case", action="append", choices=sorted({*CASES, *CUDA_CASES}))
    ap.add_argument("--shape", choices=["default", "tiny"], default="default",
                    help="tiny: every case at a tiny model shape (checks the bench runs)")
    ap.add_argument("--measure", choices=sorted({*CASES, *CUDA_CASES}), help=argparse.SUPPRESS)
    a = ap.parse_args()
    known = cases_of(a.device)
    for c in (a.case or []) + ([a.measure] if a.measure else []):
        if c not in known:
            ap.error(f"--device {a.device} has the cases {', '.join(known)}; not {c!r}")
    if a.measure:
        if a.device == "cuda":
            print(json.dumps(_measure_cuda(a.measure, shape_of("cuda", a.shape))))
        else:
            print(json.dumps({"measured_gb": _measure_ranks(a.measure,
                                                            shape_of("cpu", a.shape))}))
        return
    if a.device == "cuda":
        deadline = time.monotonic() + CUDA_DEADLINE_S
        cases = {c: run_case(c, "cuda", a.shape, timeout=deadline - time.monotonic())
                 for c in (a.case or CUDA_CASES)}
    else:
        cases = {c: run_case(c, shape=a.shape) for c in (a.case or CASES)}
    for c, r in cases.items():
        if r["measured_gb"] is None:
            print(f"{c}: {r['error']}; estimate {r['estimate_gb']:.3f} GB {r['breakdown']}",
                  file=sys.stderr)
            continue
        print(f"{c}: measured {r['measured_gb']:.3f} GB, estimate {r['estimate_gb']:.3f} GB "
              f"(x{r['ratio']}) {r['breakdown']}", file=sys.stderr)
    measured = [r for r in cases.values() if r["measured_gb"] is not None]
    result = {"cases": cases, "max_abs_error": max(abs(r["ratio"] - 1) for r in measured)
              if measured else None}
    if a.device == "cuda":
        result["device"] = "cuda"
    print(json.dumps(result))
    if len(measured) < len(cases):
        sys.exit(1)


if __name__ == "__main__":
    main()
