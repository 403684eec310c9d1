"""The meta-device sharded load (raysweep.model.load): a LLaMA-shaped HF checkpoint loads on 2
gloo ranks, each rank holding only its shards, and the gathered parameters are exactly
`from_pretrained`'s; RoPE's buffers are recomputed; heads are seeded as in a plain build."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.distributed as dist
from test_fsdp import _init, _on_two_ranks
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
)
from torch.distributed.tensor import DTensor
from transformers import LlamaForCausalLM

from raysweep.model.args import LlamaArgs
from raysweep.model.load import build_task_model
from raysweep.model.parallelize import device_mesh

# LLaMA-shaped (GQA, SwiGLU, RMSNorm, RoPE), 4 layers, hidden 256: ~3.5M parameters.
ARGS = LlamaArgs(hidden=256, intermediate=688, layers=4, heads=8, kv_heads=4, vocab=512,
                 max_positions=128)
TASK = "syn_xnli"


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
    """An HF checkpoint as the hub has them: LlamaForCausalLM, `model.`-prefixed names."""
    out = tmp_path_factory.mktemp("llama") / "ckpt"
    config = ARGS.to_hf_config()
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    return out


def _ids() -> torch.Tensor:
    return torch.randint(3, ARGS.vocab, (2, 17), generator=torch.Generator().manual_seed(1))


def _gathered(model) -> dict[str, torch.Tensor]:
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                cpu_offload=True))


def _load_worker(path, rank: int, world: int, port: int, queue) -> None:
    _init(rank, world, port)
    try:
        model = build_task_model(path, [TASK], seed=3, mesh=device_mesh())
        local = {n: p.to_local().numel() for n, p in model.named_parameters()
                 if isinstance(p, DTensor)}
        full = {n: p.numel() for n, p in model.named_parameters()}
        state = _gathered(model)
        rope = model.backbone.rotary_emb.inv_freq.clone()
        if rank == 0:  # as numpy: torch's queue shares tensors with a process that exits
            queue.put(({k: v.numpy() for k, v in state.items()}, local, full, rope.numpy()))
    finally:
        dist.destroy_process_group()


def test_hf_checkpoint_loads_sharded_on_two_ranks_as_from_pretrained(hf_checkpoint):
    torch.set_num_threads(1)
    state, local, full, rope = _on_two_ranks(partial(_load_worker, hf_checkpoint))
    state, rope = {k: torch.from_numpy(v) for k, v in state.items()}, torch.from_numpy(rope)
    ref = LlamaForCausalLM.from_pretrained(hf_checkpoint, dtype=torch.float32).model
    ref_state = ref.state_dict()
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    assert set(backbone) == set(ref_state)
    bad = [k for k, v in ref_state.items() if not torch.equal(v, backbone[k])]
    assert not bad, bad
    # Every parameter is sharded, and rank 0 holds half of each (no rank holds the model).
    assert set(local) == set(full)
    assert sum(local.values()) <= sum(full.values()) / 2 + 1024
    # RoPE's non-persistent buffer was recomputed after `to_empty` (garbage otherwise).
    assert torch.equal(rope, ref.rotary_emb.inv_freq)
    # The head is the one a plain build seeds: torch.manual_seed(seed + 1), then add_head.
    from raysweep.model.task_model import TaskModel
    from raysweep.tasks import get_task

    plain = TaskModel(ref)
    torch.manual_seed(3 + 1)
    plain.add_head(get_task(TASK))
    for k, v in plain.heads.state_dict().items():
        assert torch.equal(state[f"heads.{k}"], v), k


def test_one_process_load_equals_from_pretrained(hf_checkpoint):
    """Without a process group (run_local) the same path gives the same weights."""
    torch.set_num_threads(1)
    model = build_task_model(hf_checkpoint, [TASK], seed=3, mesh=None)
    ref = LlamaForCausalLM.from_pretrained(hf_checkpoint, dtype=torch.float32).model
    mine = model.backbone.state_dict()
    assert all(torch.equal(v, mine[k]) for k, v in ref.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model.backbone(input_ids=_ids()).last_hidden_state,
                           ref(input_ids=_ids()).last_hidden_state)
    from raysweep.model.task_model import TaskModel
    from raysweep.tasks import get_task

    plain = TaskModel(ref)
    torch.manual_seed(3 + 1)  # heads seeded as a plain build seeds them
    plain.add_head(get_task(TASK))
    assert torch.equal(model.heads[TASK].score.weight, plain.heads[TASK].score.weight)
