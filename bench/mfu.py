"""Tokens/s and MFU of the FSDP2 train step at LLaMA shapes: the step as a raysweep trial runs it
against a bare torch loop, side by side in one run.

    python bench/mfu.py [--device auto|cpu|cuda] [--steps 8] [--rounds 3] [--profile]

  bare      a plain loop: LlamaModel + LM head, fully_shard per layer then the root (the same
            mixed-precision policy and resharding as raysweep), pre-built token tensors, AdamW,
            clipping; no per-step host sync.
  in_trial  what a trial's training stage runs (`raysweep.run.stages` -> `Trainer.run`): a
            TaskModel with a causal-LM head wrapped by `raysweep.model.parallelize`, batches
            collated each step from a seeded `FeatureStream`, loss logged through the ranks.
            Ray is not started: a Ray Train job on this 2-core machine measures Ray's worker
            start and thread settings, not the step (bench/overhead.py measures that part).

Both run in the same processes (2 gloo ranks x 1 thread on CPU; one rank per GPU on CUDA, nccl),
in an order rotated each round over `--rounds` rounds, each after its warm-up steps; each time is
the median over rounds, and each ratio the median of the per-round ratios (both variants timed
back to back). Every sequence is full length, so both count the same tokens.

FLOPs per token are torchtitan's (6 x non-embedding parameters + 12 x layers x hidden x seq:
`LlamaArgs.flops_per_token`). MFU = achieved FLOP/s per GPU over the card's dense bf16 peak
(PEAK_BF16); on CPU it is null. Shapes: on CPU a LLaMA scaled down (`CPU_SHAPE`); on CUDA
Llama-3.2-1B's (`GPU_SHAPE`). `--profile` prints where each variant's time goes (torch.profiler,
rank 0) before the figures.

The last line printed is one JSON object:
{"in_trial_over_bare": ..., "mfu": ... or null, "device": "...", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as queue_module
import socket
import statistics
import sys
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from raysweep.model.args import LlamaArgs, ParallelConfig

# A LLaMA scaled down for 2 CPU cores (head_dim 64, GQA 2:1, SwiGLU ratio ~8/3) ...
CPU_SHAPE = {"args": LlamaArgs(hidden=256, intermediate=688, layers=4, heads=4, kv_heads=2,
                                vocab=4096, max_positions=256), "seq": 128, "batch": 4}
# ... and Llama-3.2-1B's shape for one GPU.
GPU_SHAPE = {"args": LlamaArgs(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8,
                                vocab=128256, max_positions=2048), "seq": 2048, "batch": 4}
# Dense bf16 peak FLOP/s (no sparsity), from the vendors' data sheets.
PEAK_BF16 = {"H200": 989e12, "H100 SXM": 989e12, "H100 NVL": 835e12, "H100 PCIe": 756e12,
             "H100": 989e12, "A100": 312e12}


def peak_flops(name: str) -> float | None:
    """The data-sheet peak of the first table entry whose name the device's contains."""
    for key, value in PEAK_BF16.items():
        if all(part in name for part in key.split()):
            return value
    return None


class Bare(torch.nn.Module):
    def __init__(self, args: LlamaArgs):
        super().__init__()
        from transformers import LlamaModel

        self.backbone = LlamaModel(args.to_hf_config())
        self.lm_head = torch.nn.Linear(args.hidden, args.vocab, bias=False)

    def forward(self, ids):
        return self.lm_head(self.backbone(input_ids=ids, use_cache=False).last_hidden_state)


def bare_shard(model: Bare, mesh, precision: str) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                 if precision == "bf16" else MixedPrecisionPolicy())
    layers = list(model.backbone.layers)
    reshard = mesh.device_type != "cpu"  # as raysweep: keep CPU layers gathered
    for i, layer in enumerate(layers):
        fully_shard(layer, mesh=mesh, mp_policy=mp_policy,
                    reshard_after_forward=reshard and i < len(layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)


class BareLoop:
    def __init__(self, args: LlamaArgs, seq: int, batch: int, mesh, precision: str, device):
        torch.manual_seed(0)
        self.model = Bare(args).to(device)
        bare_shard(self.model, mesh, precision)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.01,
                                     foreach=True)
        g = torch.Generator().manual_seed(dist.get_rank())
        self.batches = [torch.randint(3, args.vocab, (batch, seq), generator=g).to(device)
                        for _ in range(4)]
        self.i = 0

    def run(self, steps: int) -> None:
        for _ in range(steps):
            ids = self.batches[self.i % len(self.batches)]
            self.i += 1
            logits = self.model(ids)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)


class TrialLoop:
    """The trial's path: TaskModel + head, `parallelize`, `Trainer.run` over a FeatureStream."""

    def __init__(self, args: LlamaArgs, seq: int, batch: int, mesh, precision: str, device,
                 micro: int | None = None, sync_each_micro: bool = False):
        from transformers import LlamaModel

        from raysweep.model.parallelize import parallelize
        from raysweep.model.task_model import TaskModel
        from raysweep.tasks import get_task
        from raysweep.tasks.encoding import CausalLMEncoder
        from raysweep.train.loop import Optim, Trainer
        from raysweep.train.ranks import Ranks
        from raysweep.train.stream import FeatureStream

        torch.manual_seed(0)
        model = TaskModel(LlamaModel(args.to_hf_config()))
        model.add_head(get_task("syn_corpus"))
        model.to(device)
        self.model = parallelize(model, mesh, ParallelConfig(precision=precision))
        g = torch.Generator().manual_seed(1)
        features = [{"input_ids": torch.randint(3, args.vocab, (seq,), generator=g).tolist(),
                     "example_index": i} for i in range(16 * batch)]
        world = dist.get_world_size()
        self.stream = FeatureStream(features, batch * world, seed=0, ranks=Ranks.current(),
                                    micro_batch_size=micro)
        if sync_each_micro:  # the Trainer's skip of non-final syncs undone, for comparison
            self.model.set_requires_gradient_sync = lambda *a, **k: None
        self.trainer = Trainer(self.model, {"syn_corpus": CausalLMEncoder},
                               Optim(lr=1e-4, steps=10**9, warmup_frac=0.0), pad_id=0, seed=0)

    def run(self, steps: int) -> None:
        self.trainer.run({"syn_corpus": self.stream}, steps, log_every=steps)


def timed(loop, steps: int, device) -> float:
    """Seconds per step over `steps` steps, all ranks finished."""
    sync(device)
    start = time.perf_counter()
    loop.run(steps)
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()


def profile(loops: dict, steps: int, device) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, loop in loops.items():
        with prof(activities=acts) as p:
            loop.run(steps)
            sync(device)
        if dist.get_rank() == 0:
            print(f"--- profile: {name} ({steps} steps, rank 0) ---", flush=True)
            print(p.key_averages().table(sort_by=sort, row_limit=15), flush=True)


def worker(rank: int, world: int, port: int, opts: dict, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = opts["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        from raysweep.model.parallelize import device_mesh

        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        shape = GPU_SHAPE if cuda else CPU_SHAPE
        mesh = device_mesh()
        precision = "bf16" if cuda else opts["precision"]
        make = {"bare": BareLoop, "in_trial": TrialLoop}
        if opts["micro"]:  # gradient accumulation: reduce-scatter after the last micro batch
            # only (the Trainer's way) against after every one
            make["micro_skip_sync"] = partial(TrialLoop, micro=opts["micro"])
            make["micro_sync_each"] = partial(TrialLoop, micro=opts["micro"],
                                              sync_each_micro=True)
        loops = {k: f(shape["args"], shape["seq"], shape["batch"], mesh, precision, device)
                 for k, f in make.items()}
        for loop in loops.values():
            loop.run(opts["warmup"])
        if opts["profile"]:
            profile(loops, 3, device)
        times: dict[str, list[float]] = {k: [] for k in loops}
        for r in range(opts["rounds"]):  # rotated: no variant always first or last
            k = r % len(loops)
            order = list(loops)[k:] + list(loops)[:k]
            for name in order:
                times[name].append(timed(loops[name], opts["steps"], device))
        if rank == 0:
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
            queue.put({"times": times, "world": world, "precision": precision,
                       "device_name": torch.cuda.get_device_name() if cuda else "cpu",
                       "peak_gib": peak, "shape": {k: v for k, v in shape.items()
                                                   if k != "args"} | vars(shape["args"])})
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="on CPU (CUDA always runs bf16)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--micro", type=int, default=0,
                    help="also time the trial with micro batches of this size per rank, "
                         "syncing gradients after the last micro batch vs after each")
    opts = vars(ap.parse_args())
    if opts["device"] == "auto":
        opts["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    world = torch.cuda.device_count() if opts["device"] == "cuda" else 2
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, free_port_once(), opts, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    while True:  # a rank that dies would leave the queue empty forever
        try:
            out = queue.get(timeout=5)
            break
        except queue_module.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                sys.exit(f"a rank failed (exit codes {dead})")
    for p in procs:
        p.join()
    report(out, opts)


_PORT: list[int] = []


def free_port_once() -> int:
    """One port for every rank of this run."""
    if not _PORT:
        _PORT.append(free_port())
    return _PORT[0]


def report(out: dict, opts: dict) -> None:
    shape, world = out["shape"], out["world"]
    args = LlamaArgs(**{k: shape[k] for k in ("hidden", "intermediate", "layers", "heads",
                                              "kv_heads", "vocab", "max_positions")})
    tokens_per_step = shape["batch"] * shape["seq"] * world
    fpt = args.flops_per_token(shape["seq"])
    step = {k: statistics.median(v) for k, v in out["times"].items()}
    tps = {k: tokens_per_step / s for k, s in step.items()}
    peak = peak_flops(out["device_name"]) if opts["device"] == "cuda" else None
    mfu = {k: t * fpt / (peak * world) for k, t in tps.items()} if peak else None
    print(f"device {out['device_name']} x {world}, {out['precision']}, "
          f"{args.n_params() / 1e6:.1f}M params, batch {shape['batch']}/rank x seq "
          f"{shape['seq']}, {fpt / 1e6:.1f} MFLOP/token")
    for k, s_step in step.items():
        spread = ", ".join(f"{s * 1e3:.1f}" for s in out["times"][k])
        line = f"  {k:15s} {s_step * 1e3:8.1f} ms/step ({spread})  {tps[k]:10.0f} tokens/s"
        if mfu:
            line += f"  MFU {100 * mfu[k]:.1f}%"
        print(line)
    # Paired: each round times both variants back to back, so a ratio within a round cancels
    # the machine's drift (on a shared CPU, far larger than the difference measured).
    ratio = statistics.median(b / t for b, t in zip(out["times"]["bare"],
                                                     out["times"]["in_trial"]))
    print(f"in-trial / bare: {ratio:.3f} (median of per-round ratios; ratio of medians "
          f"{tps['in_trial'] / tps['bare']:.3f})")
    extra = {}
    if "micro_skip_sync" in tps:
        extra["micro_skip_over_sync_each"] = round(statistics.median(
            b / t for b, t in zip(out["times"]["micro_sync_each"],
                                  out["times"]["micro_skip_sync"])), 4)
        print(f"micro batches, sync after the last / after each: "
              f"{extra['micro_skip_over_sync_each']:.3f}")
    print(json.dumps({"in_trial_over_bare": round(ratio, 4),
                      "mfu": round(mfu["in_trial"], 4) if mfu else None,
                      "mfu_bare": round(mfu["bare"], 4) if mfu else None,
                      "device": f"{out['device_name']} x {world}",
                      "precision": out["precision"],
                      "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
                      "peak_gib": out["peak_gib"], "shape": shape} | extra))


if __name__ == "__main__":
    main()
