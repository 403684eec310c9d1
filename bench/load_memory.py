"""Peak RSS growth of each rank while it loads a LLaMA-shaped HF checkpoint, over the model's
full fp32 size, on 1, 2 and 4 gloo ranks (plain torch.multiprocessing, no Ray): the sharded
meta-device load (`raysweep.model.load.build_task_model`) against the path before it
(`from_pretrained` on every rank, then FSDP2). Goal for the sharded load: <= 1/W + 0.15.

RSS has two parts, and both are reported, as growth over the moment before the load:
- anonymous RSS (`RssAnon`): the memory the rank allocated, which is what runs out when 8 ranks of
  a node load a 30B model: `rss_over_full` and `old_path`. The kernel keeps no peak of it, so a
  thread samples it every 0.5 ms during the load (a peak shorter than that could be missed).
- total RSS, the kernel's peak (VmHWM, reset through `/proc/self/clear_refs` right before the
  load): it also counts the pages of the checkpoint files the rank has mapped (safetensors are
  read through mmap). Those are page cache, shared by every rank of a node and dropped under
  pressure: `total_rss_over_full`, `old_total`.
The checkpoint is bf16, as hub LLaMAs are (`--dtype float32` for an fp32 one); the model is fp32.

    python bench/load_memory.py [--hidden 1024 --layers 4 --dtype bfloat16 ...]

Last line: {"rss_over_full": {"1": ..., "2": ..., "4": ...}, "old_path": {...}, ...} (the worst
rank at each world size, over the fp32 backbone's size).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysweep.model.args import LlamaArgs

WORLDS = (1, 2, 4)


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _rank(path: str, sharded: bool, rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from transformers import LlamaModel

        from raysweep.model.load import build_task_model
        from raysweep.model.parallelize import device_mesh, parallelize
        from raysweep.model.task_model import TaskModel

        mesh = device_mesh()
        dist.barrier()
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before, anon0 = _kb("VmRSS"), _kb("RssAnon")
        anon, stop = [anon0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                anon[0] = max(anon[0], _kb("RssAnon"))
                time.sleep(0.0005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        if sharded:
            model = build_task_model(path, [], seed=0, mesh=mesh)
        else:  # the path before: the whole checkpoint on every rank, then sharded
            model = parallelize(TaskModel(LlamaModel.from_pretrained(path, dtype=torch.float32)),
                                mesh)
        peak = _kb("VmHWM")
        stop.set()
        sampler.join()
        anon[0] = max(anon[0], _kb("RssAnon"))
        dist.barrier()
        queue.put((rank, ((anon[0] - anon0) * 1024, (peak - before) * 1024)))
        del model
    finally:
        dist.destroy_process_group()


def measure(path: str, world: int, sharded: bool) -> list[tuple[int, int]]:
    """(anonymous, total) peak RSS growth in bytes of each rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [ctx.Process(target=_rank, args=(path, sharded, r, world, port, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    out = dict(queue.get(timeout=900) for _ in procs)
    for p in procs:
        p.join(timeout=120)
        if p.exitcode != 0:
            raise RuntimeError(f"a rank failed (exit code {p.exitcode})")
    return [out[r] for r in range(world)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--skip-old", action="store_true", help="Only the sharded load.")
    a = ap.parse_args()
    args = LlamaArgs(hidden=a.hidden, intermediate=a.intermediate, layers=a.layers, heads=16,
                     kv_heads=8, vocab=a.vocab, max_positions=256)
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        config = args.to_hf_config()
        config.architectures = ["LlamaForCausalLM"]
        torch.manual_seed(0)
        LlamaForCausalLM(config).to(getattr(torch, a.dtype)).save_pretrained(tmp)
        full = 4 * args.n_params(with_lm_head=False)  # the backbone every path loads, fp32
        print(f"checkpoint: {args.n_params(with_lm_head=False) / 1e6:.1f}M backbone params, "
              f"{full / 2**20:.0f} MiB fp32; checkpoint in {a.dtype}")
        result: dict = {"rss_over_full": {}, "old_path": {}, "total_rss_over_full": {},
                        "old_total": {}, "per_rank": {}, "goal": {},
                        "full_mib": round(full / 2**20, 1), "checkpoint_dtype": a.dtype}
        for world in WORLDS:
            growth = measure(tmp, world, sharded=True)
            ratios = [g[0] / full for g in growth]
            result["rss_over_full"][str(world)] = round(max(ratios), 3)
            result["total_rss_over_full"][str(world)] = round(max(g[1] for g in growth) / full, 3)
            result["per_rank"][str(world)] = [round(r, 3) for r in ratios]
            result["goal"][str(world)] = round(1 / world + 0.15, 3)
            line = (f"W={world}: sharded load, anonymous RSS per rank "
                    f"{[round(r, 3) for r in ratios]} (total "
                    f"{result['total_rss_over_full'][str(world)]})")
            if not a.skip_old:
                old = measure(tmp, world, sharded=False)
                result["old_path"][str(world)] = round(max(g[0] for g in old) / full, 3)
                result["old_total"][str(world)] = round(max(g[1] for g in old) / full, 3)
                line += (f"; before (from_pretrained on every rank) {result['old_path'][str(world)]}"
                         f" (total {result['old_total'][str(world)]})")
            print(line + f"; goal <= {1 / world + 0.15:.3f}", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
