"""Backbones in and out: a fresh one from a size, one from a stage output or an HF checkpoint,
and the stage-output format.

A stage output is `backbone/` (HF format, `save_pretrained`'s config.json + model.safetensors, so
it is itself a loadable LLaMA), `heads.safetensors` (the `heads.*` tensors of the TaskModel) and
`meta.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor
from transformers import LlamaConfig, LlamaModel

from raysweep.model.args import LlamaArgs


def init_backbone(args: LlamaArgs, seed: int) -> LlamaModel:
    """A freshly initialized backbone of this shape (seeded)."""
    config = args.to_hf_config()
    torch.manual_seed(seed)
    return LlamaModel(config)


def load_backbone(source: str | Path) -> LlamaModel:
    """A backbone from a stage checkpoint, a local HF checkpoint, or an HF id (a cluster only:
    nothing downloads here unless the cache or hub is reachable)."""
    path = Path(source)
    if (path / "backbone").is_dir():
        return LlamaModel.from_pretrained(path / "backbone", torch_dtype=torch.float32)
    config = LlamaConfig.from_pretrained(source)
    if config.architectures and any("CausalLM" in a for a in config.architectures):
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM.from_pretrained(source, torch_dtype=torch.float32).model
    return LlamaModel.from_pretrained(source, torch_dtype=torch.float32)


def save_checkpoint(path: Path, backbone_state: dict[str, Tensor], heads_state: dict[str, Tensor],
                    config: LlamaConfig, meta: dict[str, Any]) -> None:
    """Write a stage output: backbone/ (HF format), heads.safetensors, meta.json."""
    path.mkdir(parents=True, exist_ok=True)
    # The config is saved through a (meta-device) model, as from_pretrained will read it back.
    with torch.device("meta"):
        skeleton = LlamaModel(config)
    skeleton.config.save_pretrained(path / "backbone")
    save_file({k: v.contiguous() for k, v in backbone_state.items()},
              path / "backbone" / "model.safetensors", metadata={"format": "pt"})
    if heads_state:
        save_file({k: v.contiguous() for k, v in heads_state.items()}, path / "heads.safetensors")
    (path / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
