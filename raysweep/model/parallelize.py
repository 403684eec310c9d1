"""Every model is wrapped in one place, in torchtitan's order (`parallelize_llama`): activation
checkpointing per decoder layer, then torch.compile per decoder layer, then FSDP2 (each decoder
layer, then the root; the root group holds what is left: embeddings, final norm and the heads).

Checkpointing must wrap a layer before compile sees it (the recompute is then compiled too), and
FSDP2 comes last so it shards the wrapped layers. `ParallelConfig` (in `raysweep.model.args`, so a
plan can carry it) holds the settings; its defaults wrap nothing: fp32, no checkpointing, no
compile, only the sharding.

On CPU the mesh is a gloo mesh, on GPU nccl; `ray.train.torch.prepare_model(...,
parallel_strategy="fsdp")` refuses CPU, so we call `fully_shard` ourselves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    checkpoint_wrapper,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from raysweep.model.args import ParallelConfig
from raysweep.model.task_model import TaskModel


def device_mesh() -> DeviceMesh | None:
    """A 1-D data-parallel mesh over all ranks, or None in a plain single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device, (dist.get_world_size(),), mesh_dim_names=("dp",))


def parallelize(model: TaskModel, mesh: DeviceMesh | None,
                cfg: ParallelConfig | None = None) -> TaskModel:
    """Wrap `model` in place as `cfg` says (None: `ParallelConfig()`'s defaults), and shard it
    with FSDP2 over `mesh` (a plain single process, mesh None, gets checkpointing and compile but
    no sharding). Heads added after this call are not sharded, so add every head first."""
    cfg = cfg or ParallelConfig()
    if cfg.activation_checkpointing != "none":
        apply_activation_checkpointing(model, every=2 if cfg.activation_checkpointing ==
                                       "selective" else 1)
    if cfg.compile:
        apply_compile(model)
    if mesh is not None:
        apply_fsdp(model, mesh, cfg.precision)
    return model


def apply_activation_checkpointing(model: TaskModel, every: int = 1) -> None:
    """Recompute decoder layers' activations in backward instead of keeping them: every layer
    (`every=1`, torchtitan's "full" AC) or every `every`-th one (torchtitan's layer-selective
    AC, `selective_ac_option=str(every)`: it wraps layers 2, 4, ... counting from 1, so the last
    layer of an even stack is wrapped too). The wrapper's state-dict hooks strip its prefix, so
    checkpoints keep their keys."""
    layers = model.backbone.layers
    for i, layer in enumerate(layers):
        if (i + 1) % every:
            continue
        # LLaMA layers have no dropout (as torchtitan: no RNG state to restore), but a LoRA
        # adapter's may: then the recompute must draw the same dropout masks as the forward.
        dropout = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in layer.modules())
        layers[i] = checkpoint_wrapper(layer, preserve_rng_state=dropout)


def apply_compile(model: TaskModel) -> None:
    """torch.compile each decoder layer, as torchtitan does (small graphs; the backbone's
    Python control flow stays eager). In place (`Module.compile`), so parameter names do not
    change."""
    for layer in model.backbone.layers:
        layer.compile()


def apply_fsdp(model: TaskModel, mesh: DeviceMesh, precision: str) -> None:
    """FSDP2 on each decoder layer, then the root. "bf16": parameters are cast to bf16 for
    compute (so activations are bf16) and gradients reduced in fp32; the sharded master
    parameters and the optimizer stay fp32. Frozen (LoRA base) and trainable parameters may
    share a group: FSDP2 reduces only the gradients that exist."""
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if precision == "bf16" else MixedPrecisionPolicy())
    layers = list(model.backbone.layers)
    # Resharding after forward frees each layer's gathered parameters until backward needs them
    # again, at the price of a second all-gather per layer per step: the right trade on GPUs,
    # where memory binds. On CPU (gloo) the models are tiny and the collectives dominate, so
    # layers stay gathered from forward to backward (ZeRO-2 style).
    reshard = mesh.device_type != "cpu"
    for i, layer in enumerate(layers):
        # The last layer is needed right away by backward: never reshard it (as torchtitan).
        fully_shard(layer, mesh=mesh, mp_policy=mp,
                    reshard_after_forward=reshard and i < len(layers) - 1)
    fully_shard(model, mesh=mesh, mp_policy=mp)
