"""FSDP2 for every model, in one place (as torchtitan's `parallelize`): shard each decoder layer,
then the root. The root group holds what is left: embeddings, final norm and the task heads.

On CPU the mesh is a gloo mesh, on GPU nccl; `ray.train.torch.prepare_model(...,
parallel_strategy="fsdp")` refuses CPU, so we call `fully_shard` ourselves.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from raysweep.model.task_model import TaskModel


def device_mesh() -> DeviceMesh | None:
    """A 1-D data-parallel mesh over all ranks, or None in a plain single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device, (dist.get_world_size(),), mesh_dim_names=("dp",))


def parallelize(model: TaskModel, mesh: DeviceMesh | None, bf16: bool = False) -> TaskModel:
    """Shard `model` in place with FSDP2. Heads added after this call are not sharded, so add
    every head first."""
    if mesh is None:
        return model
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
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
    return model
