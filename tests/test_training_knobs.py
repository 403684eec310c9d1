"""The big-model knobs on 2 FSDP2 gloo ranks (CPU): activation checkpointing (none, full,
selective) changes no number; micro batches (gradient accumulation) give the gradient of the
whole batch, token-level losses included; one and two workers agree at one global batch; LoRA
trains only adapters and heads; bf16 is in force (bf16 activations, fp32 gradient reduction);
and a bf16 LoRA trial with micro batches runs end to end through `TrialRunner` on 2 ranks.

The 2-rank launcher is test_fsdp's; each 2-rank run does several checks (a spawn costs ~10 s)."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.distributed as dist
from test_fsdp import VOCAB, _features, _init, _on_two_ranks, _task
from torch.distributed.tensor import DTensor

from raysweep.model.args import ParallelConfig, tiny_args
from raysweep.model.checkpoint import init_backbone
from raysweep.model.lora import apply_lora, lora_param_names, reset_lora
from raysweep.model.parallelize import device_mesh, parallelize
from raysweep.model.task_model import TaskModel
from raysweep.tasks.base import Task
from raysweep.tasks.encoding import CausalLMEncoder, SequenceClassificationEncoder
from raysweep.train.loop import Optim, Trainer
from raysweep.train.ranks import Ranks
from raysweep.train.stream import FeatureStream

LORA = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def _lm_task() -> Task:
    return Task(name="toylm", category="lm", head="causal_lm", metric="perplexity",
                languages=("en",), roles=frozenset({"intermediate"}), source="test",
                loader=lambda *a: None)


def _lm_features():
    """Texts of very different lengths: micro batches hold different numbers of tokens, so a
    plain 1/steps weighting of their mean losses would be wrong (see train/loop.py)."""
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": [1] + torch.randint(4, VOCAB, (int(n),), generator=g).tolist(),
             "example_index": i}
            for i, n in enumerate(torch.randint(2, 30, (64,), generator=g))]


TASKS = {"toy": (_task, _features, SequenceClassificationEncoder),
         "toylm": (_lm_task, _lm_features, CausalLMEncoder)}


def _model(size: str = "llama-tiny-s", cfg: ParallelConfig | None = None, task: str = "toy",
           lora: dict | None = None) -> TaskModel:
    torch.manual_seed(0)
    model = TaskModel(init_backbone(tiny_args(size, VOCAB), seed=0))
    torch.manual_seed(1)
    model.add_head(TASKS[task][0]())
    if lora:
        apply_lora(model, lora)
        reset_lora(model, seed=3)
        with torch.no_grad():  # B = 0 at init: move it so the adapters take part in the check
            for name, p in model.named_parameters():
                if ".lora_B." in name:
                    p.add_(0.01)
    return parallelize(model, device_mesh(), cfg)


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on every rank (a collective for a sharded one)."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().clone()


def _trainer(model, task: str, steps: int = 6) -> Trainer:
    return Trainer(model, {task: TASKS[task][2]}, Optim(lr=3e-3, steps=steps, warmup_frac=0.1),
                   pad_id=0, seed=0)


def _stream(task: str, batch: int, micro: int | None) -> FeatureStream:
    return FeatureStream(TASKS[task][1](), batch, seed=0, ranks=Ranks.current(),
                         micro_batch_size=micro)


def _grads(model, task: str, batch: int, micro: int | None):
    """Loss and full gradients of one forward/backward over one global batch."""
    trainer = _trainer(model, task)
    loss, _ = trainer._forward_backward(task, _stream(task, batch, micro))
    # (The AC wrapper's prefix is not part of a parameter's name in a state dict either.)
    grads = {n.replace("_checkpoint_wrapped_module.", ""): _full(p.grad)
             for n, p in model.named_parameters() if p.grad is not None}
    return loss if Ranks.current().world == 1 else Ranks.current().sum([loss])[0] / 2, grads


def _curve(model, task: str, batch: int, micro: int | None, steps: int = 6) -> list[float]:
    logs = _trainer(model, task, steps).run({task: _stream(task, batch, micro)}, steps, 1)
    return [log.loss for log in logs]


def _params(model) -> dict[str, torch.Tensor]:
    return {n: _full(p) for n, p in model.named_parameters()}


def _knobs_run() -> dict:
    """Everything compared below, in one process or as a rank of 2 (`Ranks.current()` and
    `device_mesh()` decide)."""
    world = Ranks.current().world
    out: dict = {}
    for ac in ("none", "full", "selective"):
        out[f"ac-{ac}"] = _grads(_model(cfg=ParallelConfig(activation_checkpointing=ac)),
                                 "toy", 8, None)
    per_rank = 8 // world
    for task in TASKS:
        out[f"whole-{task}"] = _grads(_model(task=task), task, 8, None)
        out[f"micro-{task}"] = _grads(_model(task=task), task, 8, 2)
        assert per_rank // 2 > 1  # really accumulating
    out["curve-whole"] = _curve(_model(), "toy", 8, None)
    out["curve-micro"] = _curve(_model(), "toy", 8, 2)
    # LoRA: 3 steps; which parameters moved, and how big the trainable state is
    model = _model("llama-tiny-m", lora=LORA)
    before = _params(model)
    _curve(model, "toy", 8, 2, steps=3)
    after = _params(model)
    out["lora"] = {
        "moved": sorted(n for n in before if not torch.equal(before[n], after[n])),
        "adapters": sorted(lora_param_names(model)),
        "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        "names": sorted(before),
        "numel": {n: t.numel() for n, t in after.items()},
    }
    return out


def _knobs_worker(rank: int, world: int, port: int, queue) -> None:
    _init(rank, world, port)
    try:
        out = _knobs_run()
        out["bf16"] = _bf16_run()
        if rank == 0:  # as arrays: a queued tensor would travel by shared memory, and the
            queue.put(_plain(out))  # sending rank exits before the test reads it
    finally:
        dist.destroy_process_group()


def _plain(x):
    if isinstance(x, torch.Tensor):
        return x.numpy()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    return x


def _bf16_run() -> dict:
    """A bf16 step under FSDP2: the dtype of each decoder layer's output (forward hook), and the
    dtype of every gradient reduction FSDP2 runs (a spy on its reduce, calling through)."""
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as group

    seen = {"activations": set(), "reduce": set(), "unsharded_grads": set()}
    real = group.foreach_reduce

    def spy(fsdp_params, unsharded_grads, *args, **kwargs):
        seen["unsharded_grads"].update(str(g.dtype) for g in unsharded_grads)
        bound = inspect.signature(real).bind(fsdp_params, unsharded_grads, *args, **kwargs)
        seen["reduce"].add(str(bound.arguments["reduce_dtype"]))
        return real(fsdp_params, unsharded_grads, *args, **kwargs)

    model = _model(cfg=ParallelConfig(precision="bf16", activation_checkpointing="full"))
    for layer in model.backbone.layers:
        layer.register_forward_hook(
            lambda m, i, o: seen["activations"].add(str((o[0] if isinstance(o, tuple) else o)
                                                        .dtype)))
    group.foreach_reduce = spy
    try:
        # (no micro batches: FSDP2 accumulates unsynced micro-batch gradients in the reduce
        # dtype, which would hide the bf16 of the compute)
        losses = _curve(model, "toy", 8, None, steps=2)
    finally:
        group.foreach_reduce = real
    params = {str(p.dtype) for p in model.parameters()}
    return {k: sorted(v) for k, v in seen.items()} | {"losses": losses,
                                                      "params": sorted(params)}


@pytest.fixture(scope="module")
def one_and_two():
    torch.set_num_threads(1)
    return _knobs_run(), _on_two_ranks(_knobs_worker)


def _close(a, b, tol: float) -> None:
    loss_a, grads_a = a
    loss_b, grads_b = b
    assert abs(loss_a - loss_b) < tol, (loss_a, loss_b)
    assert set(grads_a) == set(grads_b) and grads_a
    worst = max(float(abs(torch.as_tensor(ga) - torch.as_tensor(grads_b[n])).max())
                for n, ga in grads_a.items())
    assert worst < tol, worst


def test_checkpointing_changes_no_loss_and_no_gradient(one_and_two):
    for run in one_and_two:
        for ac in ("full", "selective"):
            _close(run["ac-none"], run[f"ac-{ac}"], 1e-5)


def test_micro_batches_give_the_whole_batch_gradient(one_and_two):
    """8 per process as 4 micro batches of 2 (2 per rank as 2 x 2): the same loss and gradient,
    for a per-example loss and a token-level one (the texts differ in length)."""
    for run in one_and_two:
        for task in TASKS:
            _close(run[f"whole-{task}"], run[f"micro-{task}"], 1e-5)
        diffs = [abs(a - b) for a, b in zip(run["curve-whole"], run["curve-micro"])]
        assert len(diffs) == 6 and max(diffs) < 1e-5, diffs


def test_one_and_two_workers_agree_at_one_global_batch(one_and_two):
    single, sharded = one_and_two
    for key in ("curve-whole", "curve-micro"):
        diffs = [abs(a - b) for a, b in zip(single[key], sharded[key])]
        assert max(diffs) < 1e-4, (key, diffs)
    assert all(math.isfinite(x) for x in single["curve-micro"])
    assert len(set(single["curve-micro"])) == 6  # a curve, not one repeated number


def test_lora_trains_only_adapters_and_heads(one_and_two):
    for run in one_and_two:
        lo = run["lora"]
        heads = {n for n in lo["names"] if n.startswith("heads.")}
        assert lo["adapters"] and heads
        assert set(lo["trainable"]) == set(lo["adapters"]) | heads
        assert set(lo["moved"]) == set(lo["adapters"]) | heads, lo["moved"]
        small = sum(lo["numel"][n] for n in lo["trainable"])
        total = sum(lo["numel"].values())
        assert small < 0.05 * total, (small, total)


def test_bf16_policy_in_force(one_and_two):
    bf16 = one_and_two[1]["bf16"]
    assert bf16["activations"] == ["torch.bfloat16"]  # compute in bf16
    assert bf16["unsharded_grads"] == ["torch.bfloat16"]  # gradients come out of bf16 compute
    assert bf16["reduce"] == ["torch.float32"]  # ... and are reduced in fp32
    assert bf16["params"] == ["torch.float32"]  # the sharded master weights stay fp32
    assert all(math.isfinite(x) for x in bf16["losses"])


# --- a bf16 trial with micro batches and a LoRA target stage, end to end on 2 ranks ------------

def _trial_plan():
    from raysweep.plan.build import build_plan
    from raysweep.spec import SweepSpec, load_space

    spec, _ = load_space("tiny_scaling")
    raw = spec.model_dump(mode="json")
    raw["models"] = [{**raw["models"][1], "pretrain_steps": 6}]  # tiny-s: 2 layers
    raw.update(precision="bf16", activation_checkpointing="selective")
    raw["stages"]["pretrain"].update(micro_batch_size=8, log_every=3)
    raw["stages"]["intermediate"].update(steps=4, log_every=2, micro_batch_size=4)
    raw["stages"]["target"].update(steps=4, eval_every=4, log_every=2, micro_batch_size=8,
                                   finetune={"lora": LORA})
    raw["stages"]["eval"]["max_examples"] = 16
    spec = SweepSpec.model_validate(raw)
    return build_plan(spec, spec.models[0], {"lr_target": 3e-3, "lr_intermediate": 2e-3,
                                             "mixture": "english", "seed": 0})


def _trial_worker(rank: int, world: int, port: int, queue, root) -> None:
    from raysweep.results.rows import trial_row
    from raysweep.results.tables import DONE, write_trial
    from raysweep.run.runner import TrialRunner

    _init(rank, world, port)
    try:
        plan = _trial_plan()
        summary = TrialRunner(plan, root, root / "sweep", "t0").run()
        if rank == 0:
            write_trial(root / "sweep", trial_row(plan, "t0", DONE, summary, None, 0.0))
            queue.put(summary)
    finally:
        dist.destroy_process_group()


def test_bf16_lora_trial_with_micro_batches_runs_on_two_ranks(tmp_path):
    from functools import partial

    from raysweep.results.tables import load

    plan = _trial_plan()
    target = plan.stage("target")
    assert (target.precision, target.micro_batch_size, target.lora["r"]) == ("bf16", 8, 4)
    summary = _on_two_ranks(partial(_trial_worker, root=tmp_path))
    assert summary["final"] and summary["objective"] is not None
    rows = load(tmp_path / "sweep", "metrics").to_pylist()
    losses = [r["value"] for r in rows if r["metric"] == "loss"]
    assert {r["stage"] for r in rows} == {"pretrain", "intermediate", "target", "eval"}
    assert len(losses) >= 6 and all(math.isfinite(x) for x in losses)
    assert load(tmp_path / "sweep", "trials").column("precision").to_pylist() == ["bf16"]


# --- bad input: exit 2 before Ray starts, naming the key path -----------------------------------

BAD = {
    "micro batch not dividing": (
        lambda r: r["stages"]["target"].update(micro_batch_size=5),
        "stages.target.micro_batch_size", "a divisor of 16"),
    "pretrain micro batch": (
        lambda r: r["stages"]["pretrain"].update(micro_batch_size=3),
        "stages.pretrain.micro_batch_size", "a divisor of 16"),
    "LoRA target matching nothing": (
        lambda r: r["stages"]["target"].update(finetune={"lora": {"target_modules": [
            "q_proj", "qkv"]}}),
        "stages.target.finetune.lora.target_modules.1", "allowed: q_proj, k_proj"),
    "lora_r searched without LoRA": (
        lambda r: r["search"]["params"].update(lora_r={"values": [4, 8]}),
        "search.params.lora_r", "finetune: {lora"),
    "unknown precision": (lambda r: r.update(precision="fp16"), "precision", "bf16"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_knobs_exit_2_with_key_path(tmp_path, case):
    from test_space import _write, runner

    from raysweep.cli.app import app

    mutate, key_path, allowed = BAD[case]
    path = _write(tmp_path, mutate)
    # --dry-run: were the check missing, the test fails without starting a sweep.
    result = runner.invoke(app, ["launch", "--space", str(path), "--storage",
                                 str(tmp_path / "runs"), "--dry-run"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert key_path in message and allowed in message, message
    assert not (tmp_path / "runs").exists()


def test_lora_r_is_searched_into_the_target_stage():
    from test_space import BASE

    from raysweep.plan.build import build_plan
    from raysweep.spec import SweepSpec

    raw = {**BASE, "stages": {**BASE["stages"], "target": {
        **BASE["stages"]["target"], "finetune": {"lora": {"r": 8}}}}}
    spec = SweepSpec.model_validate(raw)
    params = {"lr_target": 1e-3, "lr_intermediate": 2e-3, "mixture": "english", "seed": 0}
    a = build_plan(spec, spec.models[0], {**params, "lora_r": 4}).stage("target")
    b = build_plan(spec, spec.models[0], {**params, "lora_r": 16}).stage("target")
    assert (a.lora["r"], b.lora["r"]) == (4, 16)


def test_checkpointing_replays_lora_dropout():
    """A LoRA adapter's dropout draws random masks: the checkpointed recompute must draw the same
    ones as the forward did, or the gradient is not the forward's (one process, fp32)."""
    torch.set_num_threads(1)
    lora = {**LORA, "dropout": 0.5}
    runs = {}
    for ac in ("none", "full"):
        model = _model(cfg=ParallelConfig(activation_checkpointing=ac), lora=lora)
        torch.manual_seed(7)  # the dropout masks' seed
        runs[ac] = _grads(model, "toy", 8, None)
    _close(runs["none"], runs["full"], 1e-6)
