"""LoRA fine-tuning through peft: adapters in the backbone's linear layers, the base frozen, the
heads fully trained.

`apply_lora` injects the adapters in place (`peft.inject_adapter_in_model`: the backbone stays a
`LlamaModel`, each targeted `nn.Linear` becomes a peft `lora.Linear` holding it as `base_layer`),
so `parallelize` sees the same module tree and FSDP2 shards frozen base weights and trainable
adapters in one group per decoder layer. Call it before `parallelize` (a meta-device model is
fine: the adapters are created on the base layer's device).

Parameter names change as peft names them: `...q_proj.weight` becomes
`...q_proj.base_layer.weight`, plus `...q_proj.lora_A.default.weight` and `...lora_B...`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from raysweep.model.task_model import TaskModel

ADAPTER = "default"  # peft's adapter name; one adapter per model


def lora_config(cfg: dict[str, Any]) -> LoraConfig:
    """peft's config from a stage's `lora` dict ({r, alpha, dropout, target_modules})."""
    return LoraConfig(r=int(cfg["r"]), lora_alpha=float(cfg["alpha"]),
                      lora_dropout=float(cfg["dropout"]),
                      target_modules=list(cfg["target_modules"]), bias="none")


def apply_lora(model: TaskModel, cfg: dict[str, Any]) -> None:
    """Inject LoRA adapters into `model.backbone` in place and freeze every base backbone
    parameter; heads stay trainable. Raises ValueError naming the target modules that match no
    module of the backbone (peft would silently skip some of them)."""
    targets = list(cfg["target_modules"])
    leaves = {name.rsplit(".", 1)[-1] for name, m in model.backbone.named_modules()
              if isinstance(m, nn.Linear)}
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise ValueError(f"LoRA target modules {missing} match no linear layer of the backbone; "
                         f"allowed: {sorted(leaves)}")
    inject_adapter_in_model(lora_config(cfg), model.backbone, adapter_name=ADAPTER)
    for name, p in model.backbone.named_parameters():
        p.requires_grad_(_is_adapter(name))
    for p in model.heads.parameters():
        p.requires_grad_(True)


def lora_param_names(model: nn.Module) -> set[str]:
    """The adapter parameters' names in `model` (as `named_parameters` gives them)."""
    return {name for name, _ in model.named_parameters() if _is_adapter(name)}


def reset_lora(model: nn.Module, seed: int) -> None:
    """Re-initialize every adapter as peft does (A: Kaiming-uniform with a = sqrt(5), B: zeros,
    so the adapted model starts equal to its base), from `seed` alone: the same values on every
    rank and for every sharding. Needed after `to_empty` (a meta-built model's adapters hold
    garbage). Works on FSDP2-sharded (DTensor) parameters: each rank fills its own shard of the
    full tensor, which every rank computes (adapters are small)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if not _is_adapter(name):
                continue
            full = torch.empty(p.shape, dtype=torch.float32)
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(full, a=math.sqrt(5), generator=g)
            else:
                full.zero_()
            _fill(p, full)


def _fill(p: torch.Tensor, full: torch.Tensor) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(p, DTensor):
        # src_data_rank=None: every rank has `full`; each takes its shard without a collective.
        full = distribute_tensor(full.to(p.device), p.device_mesh, p.placements,
                                 src_data_rank=None)
        p.to_local().copy_(full.to_local())
    else:
        p.copy_(full)


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name
