"""Sharded stage outputs (raysweep.model.checkpoint + raysweep.model.load): saved on 2 gloo
ranks, loaded resharded on 1 and 3 with identical parameters and the same next training losses;
the older HF-format outputs still load; shards that do not match meta.json are refused; LoRA
stages store adapters and heads only and load back as base + merged adapters; `raysweep
export` writes a from_pretrained directory."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from test_fsdp import _features, _init, _on_two_ranks
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
)
from transformers import LlamaModel

from raysweep.model.args import LlamaArgs
from raysweep.model.checkpoint import (
    DCP_DIR,
    StageCheckpointError,
    check_stage,
    save_stage,
)
from raysweep.model.load import build_task_model
from raysweep.model.parallelize import device_mesh
from raysweep.tasks import get_task
from raysweep.tasks.encoding import encoder_for
from raysweep.train.loop import Optim, train
from raysweep.train.ranks import Ranks
from raysweep.train.stream import FeatureStream

ARGS = LlamaArgs(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=96,
                 max_positions=64)
TASK, BATCH = "syn_xnli", 12  # 12 divides over 1, 2 and 3 ranks


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("llama") / "ckpt"
    torch.manual_seed(0)
    LlamaModel(ARGS.to_hf_config()).save_pretrained(out)
    return out


def _steps(model, n: int) -> list[float]:
    stream = FeatureStream(_features(), BATCH, seed=0, ranks=Ranks.current())
    logs = train(model, {TASK: stream}, {TASK: encoder_for(get_task(TASK))},
                 Optim(lr=3e-3, steps=n, warmup_frac=0.0, clip=1.0), pad_id=0, seed=0,
                 log_every=1)
    return [log.loss for log in logs]


def _backbone(model) -> dict:
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                 cpu_offload=True))
    return {k: v.numpy() for k, v in state.items() if k.startswith("backbone.")}


def _save_worker(source, stage, rank: int, world: int, port: int, queue) -> None:
    """Train 3 steps from `source`, save the stage, then read it back and take 2 more steps."""
    _init(rank, world, port)
    try:
        model = build_task_model(source, [TASK], seed=0, mesh=device_mesh())
        _steps(model, 3)
        save_stage(stage, model, {"tokens": 0, "flops": 0.0})
        saved = _backbone(model)
        loaded = build_task_model(stage, [TASK], seed=5, mesh=device_mesh())
        state, losses = _backbone(loaded), _steps(loaded, 2)
        if rank == 0:
            queue.put((saved, state, losses))
    finally:
        dist.destroy_process_group()


def _load_worker(stage, rank: int, world: int, port: int, queue) -> None:
    _init(rank, world, port)
    try:
        model = build_task_model(stage, [TASK], seed=5, mesh=device_mesh())
        state, losses = _backbone(model), _steps(model, 2)
        if rank == 0:
            queue.put((state, losses))
    finally:
        dist.destroy_process_group()


def test_saved_on_two_ranks_loads_on_one_and_three(hf_checkpoint, tmp_path):
    torch.set_num_threads(1)
    stage = tmp_path / "intermediate-abc"
    saved, on_two, losses_two = _on_two_ranks(partial(_save_worker, hf_checkpoint, stage))
    assert sorted(p.name for p in (stage / DCP_DIR).iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shard
    meta = check_stage(stage)
    assert meta["world_size"] == 2 and f"heads.{TASK}.score.weight" in str(meta["tensors"])
    on_three, losses_three = _on_two_ranks(partial(_load_worker, stage), world=3)
    one = build_task_model(stage, [TASK], seed=5, mesh=None)
    on_one = {k: v.clone().numpy() for k, v in one.state_dict().items()
              if k.startswith("backbone.")}
    losses_one = _steps(one, 2)
    # The trained weights differ from the checkpoint they started from ...
    start = LlamaModel.from_pretrained(hf_checkpoint, dtype=torch.float32).state_dict()
    assert not torch.equal(start["norm.weight"], torch.from_numpy(saved["backbone.norm.weight"]))
    # ... and every world size reads them back exactly.
    for world, state in ((2, on_two), (3, on_three), (1, on_one)):
        assert set(state) == set(saved)
        bad = [k for k, v in saved.items() if not (state[k] == v).all()]
        assert not bad, (world, bad)
    assert len(losses_one) == len(losses_two) == len(losses_three) == 2
    for other in (losses_two, losses_three):
        assert max(abs(a - b) for a, b in zip(losses_one, other)) < 1e-6, (losses_one, other)


def _saved_stage(hf_checkpoint, path: Path, lora: dict | None = None):
    """A stage output written by one process (as run_local does)."""
    model = build_task_model(hf_checkpoint, [TASK], seed=0, mesh=None, lora=lora)
    _steps(model, 2)
    meta = {"tokens": 0, "flops": 0.0}
    if lora:
        meta.update(lora=lora, base={"source": str(hf_checkpoint), "stage": None})
    save_stage(path, model, meta, adapters_only=bool(lora))
    return model


def test_shards_that_do_not_match_meta_are_refused(hf_checkpoint, tmp_path):
    stage = tmp_path / "pretrain-k"
    _saved_stage(hf_checkpoint, stage)
    check_stage(stage)
    meta = json.loads((stage / "meta.json").read_text())

    def refused(match: str) -> None:
        with pytest.raises(StageCheckpointError, match=match) as e:
            build_task_model(stage, [TASK], seed=0, mesh=None)
        assert str(stage) in str(e.value) and "do not match its metadata" in str(e.value)

    wrong = dict(meta, tensors={**meta["tensors"], "backbone.norm.weight": [65]})
    (stage / "meta.json").write_text(json.dumps(wrong))
    refused(r"backbone.norm.weight: shape \[64\] in the shards, \[65\] in meta.json")
    fewer = dict(meta, tensors={k: v for k, v in meta["tensors"].items() if "layers.1." not in k})
    (stage / "meta.json").write_text(json.dumps(fewer))
    refused("tensors in the shards that meta.json does not list")
    (stage / "meta.json").write_text(json.dumps(meta))
    shard = stage / DCP_DIR / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    refused("shard file __0_0.distcp is truncated")
    shard.unlink()
    refused("shard file __0_0.distcp is missing")
    (stage / DCP_DIR / ".metadata").unlink()
    refused("cannot read dcp/.metadata")


def test_older_format_still_loads(hf_checkpoint, tmp_path):
    """Stores written before sharded outputs (backbone/ in HF format + heads.safetensors)."""
    stage = tmp_path / "pretrain-old"
    ref = LlamaModel.from_pretrained(hf_checkpoint, dtype=torch.float32)
    ref.save_pretrained(stage / "backbone")
    save_file({"heads.x.weight": torch.zeros(2, 2)}, stage / "heads.safetensors")
    (stage / "meta.json").write_text(json.dumps({"tokens": 1, "flops": 1.0}))
    model = build_task_model(stage, [TASK], seed=0, mesh=None)
    mine = model.backbone.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in ref.state_dict().items())


LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def test_lora_stage_stores_adapters_and_loads_merged(hf_checkpoint, tmp_path):
    stage = tmp_path / "intermediate-lora"
    adapted = _saved_stage(hf_checkpoint, stage, LORA)
    meta = check_stage(stage)
    assert meta["tensors"] and all(".lora_" in k or k.startswith("heads.")
                                   for k in meta["tensors"])
    stored = sum(f.stat().st_size for f in (stage / DCP_DIR).iterdir())
    full = 4 * ARGS.n_params(with_lm_head=False)
    assert stored < 0.15 * full, (stored, full)  # tiny model: the heads weigh in; < 5% at 7B
    merged = build_task_model(stage, [TASK], seed=0, mesh=None)  # no LoRA: base + adapters
    ids = torch.randint(3, ARGS.vocab, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = adapted.backbone(input_ids=ids).last_hidden_state
        got = merged.backbone(input_ids=ids).last_hidden_state
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
    base = LlamaModel.from_pretrained(hf_checkpoint, dtype=torch.float32)
    with torch.no_grad():  # and the adapters did change the model
        assert not torch.allclose(base(input_ids=ids).last_hidden_state, want, atol=1e-4)


def test_export_writes_a_from_pretrained_directory(hf_checkpoint, tmp_path):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from raysweep.cli.app import app

    stage = tmp_path / "intermediate-x"
    model = _saved_stage(hf_checkpoint, stage)
    out = tmp_path / "hf"
    result = CliRunner().invoke(app, ["export", str(stage), "--hf", str(out)])
    assert result.exit_code == 0, result.output
    back = LlamaModel.from_pretrained(out, dtype=torch.float32).state_dict()
    mine = model.backbone.state_dict()
    assert set(back) == set(mine) and all(torch.equal(v, mine[k]) for k, v in back.items())
    heads = load_file(out / "heads.safetensors")
    assert torch.equal(heads[f"heads.{TASK}.score.weight"],
                       model.heads[TASK].score.weight.detach())
    (stage / DCP_DIR / "__0_0.distcp").write_bytes(b"")
    bad = CliRunner().invoke(app, ["export", str(stage), "--hf", str(tmp_path / "hf2")])
    assert bad.exit_code == 2 and "do not match its metadata" in bad.output


def test_launch_refuses_a_damaged_stored_stage_before_ray(hf_checkpoint, tmp_path):
    """A finished stage output the plan would load, whose shards no longer match meta.json, is
    exit 2 at launch (naming its directory), before Ray starts a trial; nothing is removed."""
    import yaml
    from typer.testing import CliRunner

    from raysweep.cli.app import app
    from raysweep.plan.cost import plan_cost
    from raysweep.spec import load_space

    space = {
        "name": "damaged", "models": [{"name": "local", "hf": str(hf_checkpoint),
                                       "n_params": ARGS.n_params(), "workers": 1}],
        "stages": {"intermediate": {"steps": 2, "batch_size": 4},
                   "target": {"tasks": [TASK], "steps": 2, "batch_size": 4}},
        "mixtures": {"english": {"tasks": {"syn_hypernym": 1.0}}},
        "search": {"params": {"lr_target": {"values": [1e-3]},
                              "lr_intermediate": {"values": [1e-3]},
                              "mixture": {"values": ["english"]}}},
    }
    file = tmp_path / "damaged.yaml"
    file.write_text(yaml.safe_dump(space))
    spec, _ = load_space(str(file))
    (stage,) = [c for c in plan_cost(spec).stages if c.stored]
    out = tmp_path / "runs" / "stages" / f"{stage.kind}-{stage.key}"
    _saved_stage(hf_checkpoint, out)
    (out / "STATUS").write_text(json.dumps({"status": "done"}))
    shard = out / DCP_DIR / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    before = sorted(p.name for p in out.rglob("*"))
    result = CliRunner().invoke(app, ["launch", "--space", str(file), "--storage",
                                      str(tmp_path / "runs")], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert str(out) in result.output and "truncated" in result.output
    assert sorted(p.name for p in out.rglob("*")) == before
    assert not (tmp_path / "runs" / "damaged").exists()  # no sweep started
