"""The memory estimate (`raysweep.plan.memory`) against the measured peak of real training steps
on CPU: each case runs two AdamW steps of a LLaMA-shaped TaskModel (the project's model, loss
and optimizer) in a fresh process, fp32, on 1 rank or on 2 gloo FSDP2 ranks, and reports each
rank's peak RSS growth (VmHWM minus the RSS before the model was built) beside the estimate.

    python bench/memory_estimate.py                 # every case
    python bench/memory_estimate.py --case lm-1     # one

Last line: {"cases": {name: {"measured_gb", "estimate_gb", "ratio"}}, "max_abs_error": ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def stage_of(case: str):
    head, micro, seq, ac, ranks = CASES[case]
    common = dict(data_dir=None, parent=None, model=None, lr=1e-4, steps=2,
                  batch_size=micro * ranks, max_length=seq, log_every=1, seed=0,
                  precision="fp32", activation_checkpointing=ac, micro_batch_size=None,
                  lora=None)
    if head == "causal_lm":
        return PretrainConfig(**common, corpus="toy_lm")
    return TargetConfig(**common, tasks=["toy"], warmup_frac=0.1, eval_every=2)


def _rss_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024 / 1e9
    raise RuntimeError(field)


def _measure(case: str, rank: int = 0, world: int = 1, port: int = 0, out=None) -> float:
    """Two training steps; this rank's peak RSS growth in GB."""
    import torch

    from raysweep.model.args import ParallelConfig
    from raysweep.model.checkpoint import init_backbone
    from raysweep.model.parallelize import device_mesh, parallelize
    from raysweep.model.task_model import TaskModel
    from raysweep.tasks.base import Task
    from raysweep.train.loop import Optim, make_optimizer, task_loss

    torch.set_num_threads(1)
    if world > 1:
        import torch.distributed as dist

        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    head, micro, seq, ac, _ = CASES[case]
    task = Task(name="toy", category="lm" if head == "causal_lm" else "classification",
                head=head, metric="accuracy", languages=("en",), roles=frozenset({"target"}),
                source="bench", loader=lambda *a: None, num_labels=2)
    g = torch.Generator().manual_seed(rank)
    batch = {"input_ids": torch.randint(5, SHAPE.vocab, (micro, seq), generator=g),
             "attention_mask": torch.ones(micro, seq, dtype=torch.long),
             "labels": torch.randint(0, 2, (micro,), generator=g)}
    base = _rss_gb("VmRSS")
    model = TaskModel(init_backbone(SHAPE, seed=0))
    model.add_head(task)
    model = parallelize(model, device_mesh(), ParallelConfig(activation_checkpointing=ac))
    opt, _ = make_optimizer(model, Optim(lr=1e-4, steps=2, warmup_frac=0.1))
    for _ in range(2):  # AdamW's states exist from the first step on: the second is the peak
        task_loss(model, "toy", batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = _rss_gb("VmHWM") - base
    if out is not None:
        out.put((rank, peak))
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    return peak


def _measure_ranks(case: str) -> float:
    """The largest peak over the case's ranks (gloo FSDP2 when there are several)."""
    world = CASES[case][4]
    if world == 1:
        return _measure(case)
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_measure, args=(case, r, world, port, out)) for r in range(world)]
    for p in procs:
        p.start()
    peaks = [out.get(timeout=600)[1] for _ in procs]
    for p in procs:
        p.join()
    return max(peaks)


def run_case(case: str) -> dict:
    """Measure one case in a fresh interpreter (so no earlier case's memory counts)."""
    proc = subprocess.run([sys.executable, __file__, "--measure", case], capture_output=True,
                          text=True, check=True)
    measured = json.loads(proc.stdout.strip().splitlines()[-1])["measured_gb"]
    workers = CASES[case][4]
    est = estimate_memory(SHAPE, stage_of(case), workers, gpu=False)
    return {"measured_gb": round(measured, 4), "estimate_gb": round(est.total, 4),
            "ratio": round(est.total / measured, 3), "breakdown": est.breakdown()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", action="append", choices=sorted(CASES))
    ap.add_argument("--measure", choices=sorted(CASES), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps({"measured_gb": _measure_ranks(a.measure)}))
        return
    cases = {c: run_case(c) for c in (a.case or CASES)}
    for c, r in cases.items():
        print(f"{c}: measured {r['measured_gb']:.3f} GB, estimate {r['estimate_gb']:.3f} GB "
              f"(x{r['ratio']}) {r['breakdown']}", file=sys.stderr)
    print(json.dumps({"cases": cases, "max_abs_error": max(abs(r["ratio"] - 1)
                                                          for r in cases.values())}))


if __name__ == "__main__":
    main()
