"""Tokens/s and MFU of the FSDP2 train step at LLaMA shapes: the step inside a real raysweep trial
(a Ray Train job) against a bare torch loop, side by side in one run.

    python bench/mfu.py [--device auto|cpu|cuda] [--steps 4] [--rounds 6] [--warmup 2]
                        [--precision fp32|bf16] [--micro N] [--profile] [--worker-niceness N]

Variants (each timed over `--steps` steady-state steps per round, after `--warmup` steps):
  bare      outside Ray, torch.multiprocessing ranks: LlamaModel + LM head, `fully_shard` per
            layer then the root (raysweep's mixed-precision policy and resharding), pre-built
            token tensors, AdamW, clipping; no per-step host sync.
  trainer   the same processes as `bare`: raysweep's training step without Ray. The model is
            built as `TrialRunner.model` builds a from-scratch one (`build_task_model`: TaskModel,
            causal-LM head, `parallelize`); batches are collated each step from a seeded
            `FeatureStream` and run through `Trainer.run`.
  in_trial  the `trainer` step as a raysweep trial runs it: a local Ray (2 CPUs, raysweep's
            RAY_ENV), a Tune function trial (resources as `raysweep.run.sweep` asks) that runs a
            `TorchTrainer` built by `raysweep.run.trial.make_trainer` with the same workers,
            CPUs and `torch.set_num_threads` as `train_worker`. Ray's start-up, the model's build
            and the warm-up are not timed (bench/overhead.py measures the start-up). The workers
            report each round's time through `ray.train.report`; the figures are those reports.
`--micro N` adds two `trainer` variants with micro batches of N per rank: gradients synced after
the last micro batch only (the Trainer's way) against after each.

Both sides stay up for the whole run and wait between rounds; this driver opens one variant at a
time (files in a gate directory), so nothing is timed while another variant computes. Every round
times every variant, in an order rotated each round; each time is the median over rounds and each
ratio the median of per-round ratios (one round's variants run seconds apart, which cancels most
of a shared machine's drift). Ray's processes (GCS, raylet, dashboard, the trial, the Train
controller) stay up during every variant's rounds, so their background CPU burdens all variants
alike; `ray_background_cores` is their CPU use over the rounds, in cores.

Beside wall time, each step's CPU time (every thread of the ranks' processes, summed over ranks):
on a loaded machine, wall time also says how much CPU the scheduler granted, and Ray runs its
workers at niceness +15 unless RAY_worker_niceness says otherwise (`--worker-niceness`); CPU
time says what the step itself cost, Ray's threads in the worker included.

Ranks: 2 gloo ranks x 1 thread on CPU; one rank per GPU on CUDA (nccl, bf16). FLOPs per token
are torchtitan's (`LlamaArgs.flops_per_token`); MFU = achieved FLOP/s per GPU over the card's
dense bf16 peak (PEAK_BF16); null on CPU. Shapes: on CPU a LLaMA scaled down (`CPU_SHAPE`), on
CUDA Llama-3.2-1B's (`GPU_SHAPE`). `--profile`: where each variant's time goes (torch.profiler,
rank 0, after the warm-up), printed before the figures.

The last line printed is one JSON object: {"in_trial_over_bare": ..., "mfu": ... or null,
"device": "...", "tokens_per_s": {...}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch
import torch.distributed as dist
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
CPUS_PER_WORKER = 1  # as a tiny size's trial asks (plan.cpus_per_worker): 2 ranks on 2 cores
POLL_S = 0.02  # how often a waiting rank looks at the gate: idle ranks must not load the cores
READY_TIMEOUT_S = 1800.0  # Ray's start-up, the builds and the warm-up, on a loaded machine
ROUND_TIMEOUT_S = 900.0


def peak_flops(name: str) -> float | None:
    """The data-sheet peak of the first table entry whose name the device's contains."""
    for key, value in PEAK_BF16.items():
        if all(part in name for part in key.split()):
            return value
    return None


def rotated(names: list[str], round_index: int) -> list[str]:
    """Round r's order: the variants rotated by r, so none is always first or last."""
    k = round_index % len(names)
    return names[k:] + names[:k]


# --- the loops --------------------------------------------------------------------------------


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
    """A trial's training step: the model as `TrialRunner.model` builds a from-scratch one,
    `Trainer.run` over a FeatureStream of full-length sequences."""

    def __init__(self, args: LlamaArgs, seq: int, batch: int, mesh, precision: str, device,
                 micro: int | None = None, sync_each_micro: bool = False):
        from raysweep.model.load import build_task_model
        from raysweep.tasks.encoding import CausalLMEncoder
        from raysweep.train.loop import Optim, Trainer
        from raysweep.train.ranks import Ranks
        from raysweep.train.stream import FeatureStream

        self.model = build_task_model(None, ["syn_corpus"], 0, mesh,
                                      ParallelConfig(precision=precision), None, args)
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


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()


def timed(loop, steps: int, device) -> dict[str, float]:
    """Per step over `steps` steps, all ranks finished: wall seconds ("s"), and the CPU seconds
    the ranks' processes used, all their threads, summed over ranks ("cpu_s"). On a loaded
    machine the wall time is also how much CPU the scheduler granted; the CPU time is what the
    step cost, wherever it ran."""
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    loop.run(steps)
    sync(device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    # On the device: an nccl group has no CPU backend.
    total = torch.tensor([cpu], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return {"s": wall / steps, "cpu_s": total.item() / steps}


def profile_table(loop, steps: int, device) -> str:
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as p:
        loop.run(steps)
        sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return p.key_averages().table(sort_by=sort, row_limit=15)


def thread_facts() -> dict:
    """What decides how a rank computes: torch's thread pools, the env Ray may set, the CPUs and
    priority the process may use, and how many OS threads it runs (Ray's workers run many)."""
    import psutil

    env = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
    return {"torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            **{k: os.environ.get(k) for k in env},
            "affinity_cpus": len(os.sched_getaffinity(0)), "nice": os.nice(0),
            "os_threads": psutil.Process().num_threads(), "pid": os.getpid()}


# --- the gate: the driver opens one variant at a time, the waiting ranks poll ----------------


class Aborted(RuntimeError):
    pass


class Gate:
    """Files in one directory. The driver `open`s "<variant>-<round>" and waits for its
    `result`; each side's ranks `wait` for one of theirs to open, run it, and rank 0 writes
    `done`. Either end may `abort` (a side died, the trial ended): every wait then raises."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def open(self, name: str) -> None:
        (self.root / f"{name}.go").touch()

    def abort(self, why: str) -> None:
        (self.root / "abort").write_text(why)

    def _check(self) -> None:
        if (self.root / "abort").exists():
            raise Aborted((self.root / "abort").read_text())

    def wait(self, names: list[str], timeout: float) -> str:
        """The first of `names` the driver opened."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in names:
                if (self.root / f"{name}.go").exists():
                    return name
            self._check()
            time.sleep(POLL_S)
        raise Aborted(f"none of {names} opened in {timeout:.0f} s")

    def done(self, name: str, payload) -> None:
        tmp = self.root / f".{name}.tmp"
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, self.root / f"{name}.json")  # a reader never sees half a file

    def result(self, name: str, timeout: float, alive=lambda: None):
        """`name`'s payload; `alive()` returns why the other end is gone, or None."""
        path, deadline = self.root / f"{name}.json", time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return json.loads(path.read_text())
            self._check()
            gone = alive()
            if gone:
                raise Aborted(gone)
            time.sleep(POLL_S)
        raise Aborted(f"no result for {name} in {timeout:.0f} s")


# --- one side: the bare processes or the Ray Train workers -----------------------------------


def serve(side: str, loops: dict, opts: dict, gate: Gate, device, report=None) -> None:
    """Warm up, say ready (with every rank's thread facts), then time each variant whenever the
    driver opens it. `report` (the Ray side: `ray.train.report`) gets each round's time."""
    from raysweep.train.ranks import Ranks

    ranks = Ranks.current()
    for loop in loops.values():
        loop.run(opts["warmup"])
    tables = {k: profile_table(v, 3, device) for k, v in loops.items()} if opts["profile"] else {}
    facts = ranks.gather(thread_facts())
    if ranks.rank == 0:
        gate.done(f"{side}-ready", {"ranks": facts, "profile": tables})
    for r in range(opts["rounds"]):
        pending = {f"{name}-{r}": name for name in loops}
        while pending:
            # (The other side may still be building and warming up before round 0.)
            name = pending.pop(gate.wait(list(pending), READY_TIMEOUT_S))
            # Rank 0's figures on every rank: whichever rank's report Train forwards, it is
            # the figure the driver gets through the gate.
            took = ranks.broadcast(timed(loops[name], opts["steps"], device))
            if report is not None:  # every rank: Train gathers a report from all of them
                report({"variant": name, "round": r, "s_per_step": took["s"],
                        "cpu_s_per_step": took["cpu_s"]})
            if ranks.rank == 0:
                gate.done(f"{name}-{r}", took)
    if ranks.rank == 0:
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        gate.done(f"{side}-end", {"peak_gib": peak})


def make_loops(names: list[str], opts: dict, mesh, device) -> dict:
    shape = GPU_SHAPE if device.type == "cuda" else CPU_SHAPE
    precision = "bf16" if device.type == "cuda" else opts["precision"]
    make = {"bare": BareLoop, "trainer": TrialLoop, "in_trial": TrialLoop,
            "micro_skip_sync": partial(TrialLoop, micro=opts["micro"]),
            "micro_sync_each": partial(TrialLoop, micro=opts["micro"], sync_each_micro=True)}
    return {k: make[k](shape["args"], shape["seq"], shape["batch"], mesh, precision, device)
            for k in names}


def bare_worker(rank: int, world: int, port: int, opts: dict, gate_dir: str) -> None:
    from raysweep.model.parallelize import device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = opts["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(CPUS_PER_WORKER)  # what train_worker sets in a Train worker
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    gate = Gate(gate_dir)
    try:
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        serve("bare", make_loops(bare_variants(opts), opts, device_mesh(), device), opts, gate,
              device)
    except Aborted:
        pass  # the driver knows why
    except BaseException as e:
        gate.abort(f"bare rank {rank}: {type(e).__name__}: {e}")
        raise
    finally:
        dist.destroy_process_group()


def bare_variants(opts: dict) -> list[str]:
    return ["bare", "trainer"] + (["micro_skip_sync", "micro_sync_each"] if opts["micro"] else [])


def ray_worker(config: dict) -> None:
    """The Train worker: as `raysweep.run.runner.train_worker`, thread count first."""
    import ray.train

    from raysweep.model.parallelize import device_mesh

    torch.set_num_threads(int(config["threads"]))
    opts, gate = config["opts"], Gate(config["gate"])
    try:
        if opts["device"] == "cuda":
            import ray.train.torch

            device = ray.train.torch.get_device()
            torch.cuda.set_device(device)
        else:
            device = torch.device("cpu")
        serve("ray", make_loops(["in_trial"], opts, device_mesh(), device), opts, gate, device,
              report=ray.train.report)
    except BaseException as e:
        if not isinstance(e, Aborted):
            gate.abort(f"Ray worker: {type(e).__name__}: {e}")
        raise


def ray_trial(config: dict) -> None:
    """The Tune function trial: a Train job as `raysweep.run.trial.run_trial` launches one."""
    from ray import tune

    from raysweep.run.trial import make_trainer

    cuda = config["opts"]["device"] == "cuda"
    make_trainer(ray_worker, {**config, "threads": CPUS_PER_WORKER},
                 name=f"mfu-{tune.get_context().get_trial_id()}", storage=config["storage"],
                 workers=config["world"], cpus_per_worker=CPUS_PER_WORKER,
                 gpus_per_worker=1 if cuda else 0).fit()


def run_ray(opts: dict, world: int, work: str, gate: Gate) -> list[dict]:
    """A fresh local Ray of this run's own (address="local" never joins another's cluster on
    this machine), set up as `raysweep.run.sweep.connect` sets up an embedded one; one Tune
    trial; every `ray.train.report` the workers sent, as Tune recorded it."""
    import ray
    from ray import tune

    from raysweep.run.sweep import RAY_ENV

    env = dict(RAY_ENV)
    if opts["worker_niceness"] is not None:  # Ray renices its workers by +15 unless told
        env["RAY_worker_niceness"] = str(opts["worker_niceness"])
    ray.init(address="local", num_cpus=max(2, world), include_dashboard=True,
             dashboard_host="127.0.0.1", log_to_driver=False, _temp_dir=f"{work}/ray",
             runtime_env={"env_vars": env})
    try:
        storage = f"{work}/storage"
        # The trial only waits on its Train workers, as in raysweep.run.sweep: a token bundle.
        grid = tune.Tuner(tune.with_resources(ray_trial, {"cpu": 0, "memory": 64 * 2**20}),
                          param_space={"opts": opts, "gate": str(gate.root), "world": world,
                                       "storage": storage},
                          run_config=tune.RunConfig(storage_path=storage, verbose=0)).fit()
    finally:
        ray.shutdown()
    if grid.errors:
        raise RuntimeError(f"the Ray trial failed: {grid.errors[0]}")
    df = grid[0].metrics_dataframe
    return df[df["variant"].notna()][["variant", "round", "s_per_step"]].to_dict("records")


# --- the driver -------------------------------------------------------------------------------


def cpu_by_pid() -> dict[int, float]:
    """CPU seconds of this process and its descendants (Ray's processes and the ranks)."""
    import psutil

    me = psutil.Process()
    out = {}
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:  # gone meanwhile
            pass
    return out


def side_of(variant: str) -> str:
    return "ray" if variant == "in_trial" else "bare"


def conduct(gate: Gate, variants: list[str], opts: dict, alive,
            sides: tuple[str, ...] = ("bare", "ray")) -> dict:
    """Both sides ready, then every round opens each variant in turn and waits for its time.
    `alive(side)` says why that side is gone, or None."""
    ready = {s: gate.result(f"{s}-ready", READY_TIMEOUT_S, partial(alive, s)) for s in sides}
    ranks = {f["pid"] for r in ready.values() for f in r["ranks"]}
    load0, cpu0, start = os.getloadavg()[0], cpu_by_pid(), time.perf_counter()
    times: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    orders = []
    for r in range(opts["rounds"]):
        orders.append(rotated(variants, r))
        for v in orders[-1]:
            gate.open(f"{v}-{r}")
            took = gate.result(f"{v}-{r}", ROUND_TIMEOUT_S, partial(alive, side_of(v)))
            times[v].append(took["s"])
            cpu[v].append(took["cpu_s"])
            print(f"round {r + 1}/{opts['rounds']}: {v} {took['s'] * 1e3:.1f} ms/step, "
                  f"{took['cpu_s'] * 1e3:.1f} CPU ms/step", file=sys.stderr, flush=True)
    wall, cpu1 = time.perf_counter() - start, cpu_by_pid()
    background = sum(t - cpu0.get(pid, 0.0) for pid, t in cpu1.items() if pid not in ranks)
    end = {s: gate.result(f"{s}-end", ROUND_TIMEOUT_S, partial(alive, s)) for s in ready}
    return {"times": times, "cpu": cpu, "orders": orders, "ready": ready, "end": end,
            "ray_background_cores": background / wall,
            "load_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(opts: dict, world: int) -> dict:
    """Start the bare ranks and the Ray trial, conduct the rounds from a thread (Tune wants the
    main thread), and shut everything down whatever happens."""
    import torch.multiprocessing as mp

    # A short path: Ray's socket paths under it must stay below the OS limit (107 bytes).
    work = tempfile.mkdtemp(prefix="rsm-", dir="/tmp")
    gate = Gate(f"{work}/gate")
    ctx, port = mp.get_context("spawn"), free_port()
    procs = [ctx.Process(target=bare_worker, args=(r, world, port, opts, str(gate.root)))
             for r in range(world)]
    for p in procs:
        p.start()
    trial_over, out, errors = threading.Event(), {}, []

    def alive(side: str) -> str | None:
        dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if dead:
            return f"a bare rank failed (exit codes {dead})"
        return "the Ray trial ended" if side == "ray" and trial_over.is_set() else None

    def conductor() -> None:
        try:
            out.update(conduct(gate, ["bare", "in_trial", *bare_variants(opts)[1:]], opts,
                               alive))
        except BaseException as e:
            errors.append(e)
            gate.abort(f"driver: {e}")

    def stop_ranks() -> None:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # ours: a rank stuck in a collective after the others left
                p.terminate()
        shutil.rmtree(work, ignore_errors=True)

    if opts["no_ray"]:  # bare and trainer only (a machine without Ray): no trial to wait on
        try:
            out.update(conduct(gate, bare_variants(opts), opts, alive, sides=("bare",)))
        finally:
            stop_ranks()
        return out
    thread = threading.Thread(target=conductor, daemon=True)
    thread.start()
    try:
        reports = run_ray(opts, world, work, gate)
    except BaseException as e:
        gate.abort(f"driver: {type(e).__name__}: {e}")
        raise
    finally:
        trial_over.set()
        thread.join()
        stop_ranks()
    if errors:
        sys.exit(f"bench/mfu.py: {errors[0]}")
    reported = [r["s_per_step"] for r in sorted(reports, key=lambda r: r["round"])
                if r["variant"] == "in_trial"]
    if reported != out["times"]["in_trial"]:
        sys.exit(f"the trial's ray.train.report times {reported} differ from the gate's "
                 f"{out['times']['in_trial']}")
    return out


def summarize(out: dict, opts: dict, world: int) -> dict:
    """The figures (pure: no torch.distributed, no Ray)."""
    shape = GPU_SHAPE if opts["device"] == "cuda" else CPU_SHAPE
    args, times, cpu = shape["args"], out["times"], out["cpu"]
    tokens_per_step = shape["batch"] * shape["seq"] * world
    fpt = args.flops_per_token(shape["seq"])
    tps = {k: tokens_per_step / statistics.median(v) for k, v in times.items()}
    peak = peak_flops(out["device_name"]) if opts["device"] == "cuda" else None
    mfu = {k: t * fpt / (peak * world) for k, t in tps.items()} if peak else None

    def paired(num: str, den: str, per=times) -> float | None:  # `num`'s speed over `den`'s
        if num not in per:  # --no-ray: no in_trial variant
            return None
        return round(statistics.median(d / n for n, d in zip(per[num], per[den])), 4)

    # MFU of the trial's step: in the Ray trial, or with --no-ray the same step without Ray
    trial_side = "in_trial" if "in_trial" in tps else "trainer"
    fig = {"in_trial_over_bare": paired("in_trial", "bare"),
           "mfu": round(mfu[trial_side], 4) if mfu else None,
           "mfu_of": trial_side,
           "mfu_trainer": round(mfu["trainer"], 4) if mfu else None,
           "mfu_bare": round(mfu["bare"], 4) if mfu else None,
           "device": f"{out['device_name']} x {world}",
           "precision": "bf16" if opts["device"] == "cuda" else opts["precision"],
           "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
           "trainer_over_bare": paired("trainer", "bare"),
           "in_trial_over_trainer": paired("in_trial", "trainer"),
           "in_trial_over_bare_cpu": paired("in_trial", "bare", cpu),
           "trainer_over_bare_cpu": paired("trainer", "bare", cpu),
           "in_trial_over_trainer_cpu": paired("in_trial", "trainer", cpu),
           "ms_per_step": {k: [round(s * 1e3, 1) for s in v] for k, v in times.items()},
           "cpu_ms_per_step": {k: [round(s * 1e3, 1) for s in v] for k, v in cpu.items()},
           "ray_background_cores": round(out["ray_background_cores"], 3),
           "load_1min": out["load_1min"], "threads": out["threads"],
           "peak_gib": out["peak_gib"], "rounds": opts["rounds"], "steps": opts["steps"],
           "shape": {"batch": shape["batch"], "seq": shape["seq"], **vars(args)}}
    if "micro_skip_sync" in times:
        fig["micro_skip_over_sync_each"] = paired("micro_skip_sync", "micro_sync_each")
    return fig


def print_figures(fig: dict, out: dict) -> None:
    for side, ready in out["ready"].items():
        for name, table in ready["profile"].items():
            print(f"--- profile: {name} (3 steps, rank 0) ---\n{table}")
    s = fig["shape"]
    args = LlamaArgs(**{k: s[k] for k in ("hidden", "intermediate", "layers", "heads",
                                          "kv_heads", "vocab", "max_positions")})
    print(f"device {fig['device']}, {fig['precision']}, {args.n_params() / 1e6:.1f}M params, "
          f"batch {s['batch']}/rank x seq {s['seq']}, {fig['steps']} steps x {fig['rounds']} "
          f"rounds; load (1 min) {fig['load_1min'][0]} -> {fig['load_1min'][1]}")
    for k, per_round in fig["ms_per_step"].items():
        print(f"  {k:15s} {statistics.median(per_round):8.1f} ms/step "
              f"({', '.join(map(str, per_round))})  {fig['tokens_per_s'][k]:10.0f} tokens/s, "
              f"{statistics.median(fig['cpu_ms_per_step'][k]):.1f} CPU ms/step")
    for side, facts in fig["threads"].items():
        print(f"  threads, {side}: {facts}")
    if fig["in_trial_over_bare"] is None:
        print(f"trainer / bare {fig['trainer_over_bare']:.3f} (median of per-round ratios; "
              f"--no-ray: no Ray trial); by CPU time per step {fig['trainer_over_bare_cpu']:.3f}")
        print(json.dumps(fig))  # the last line
        return
    print(f"in_trial / bare {fig['in_trial_over_bare']:.3f} = trainer / bare "
          f"{fig['trainer_over_bare']:.3f} x in_trial / trainer "
          f"{fig['in_trial_over_trainer']:.3f} (each a median of per-round ratios); by CPU "
          f"time per step, in_trial / bare {fig['in_trial_over_bare_cpu']:.3f}, trainer / bare "
          f"{fig['trainer_over_bare_cpu']:.3f}, in_trial / "
          f"trainer {fig['in_trial_over_trainer_cpu']:.3f}; Ray's other processes used "
          f"{fig['ray_background_cores']:.2f} cores during the rounds")
    print(json.dumps(fig))  # the last line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant per round")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="on CPU (CUDA always runs bf16)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--micro", type=int, default=0,
                    help="also time the trainer with micro batches of this size per rank, "
                         "syncing gradients after the last micro batch vs after each")
    ap.add_argument("--no-ray", action="store_true",
                    help="time bare and trainer only (where Ray is not installed, e.g. a GPU "
                         "box without it): no in_trial figure; MFU is the trainer's")
    ap.add_argument("--worker-niceness", type=int, default=None,
                    help="RAY_worker_niceness for the Ray workers (default: Ray's own, +15 "
                         "over the driver); raysweep does not set it")
    opts = vars(ap.parse_args())
    if min(opts["steps"], opts["rounds"], opts["warmup"] + 1) < 1:
        ap.error("--steps and --rounds must be at least 1, --warmup at least 0")
    if opts["device"] == "auto":
        opts["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    world = torch.cuda.device_count() if opts["device"] == "cuda" else 2
    out = measure(opts, world)
    facts = {s: r["ranks"] for s, r in out["ready"].items()}
    out |= {"device_name": torch.cuda.get_device_name() if opts["device"] == "cuda" else "cpu",
            "threads": {s: [{k: v for k, v in f.items() if k != "pid"} for f in fs]
                        for s, fs in facts.items()},
            "peak_gib": {s: e["peak_gib"] for s, e in out["end"].items()}}
    print_figures(summarize(out, opts, world), out)


if __name__ == "__main__":
    main()
