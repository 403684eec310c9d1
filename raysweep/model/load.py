"""A stage's TaskModel, built so that no rank ever holds the whole loaded model (torchtitan's
order): the backbone is built on the meta device (no memory), LoRA adapters are injected, the
model is wrapped and sharded (`parallelize`), each rank allocates only its own shards
(`to_empty`), and those are filled straight from the source, shard by shard, with
`torch.distributed.checkpoint`:

- an HF checkpoint (a local directory of safetensors, or a hub id already in the cache):
  `HuggingFaceStorageReader` reads each rank's slices of each tensor;
- a raysweep stage output: sharded (DCP, resharded to this world size) or the older HF-format
  `backbone/` directory; a LoRA stage's output is its base with the adapters merged in.

Then the non-persistent buffers `to_empty` left as garbage (RoPE's `inv_freq`) are recomputed,
the heads get their seeded initial values and LoRA adapters theirs (`reset_lora`).

Heads are initialized exactly as before this path existed (`torch.manual_seed(seed + 1)`, then
one `add_head` per task, on the CPU), so a trial's numbers do not depend on how it loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import Tensor, nn
from torch.distributed.tensor import DTensor, distribute_tensor
from transformers import LlamaConfig, LlamaModel

from raysweep.model.args import LlamaArgs, ParallelConfig
from raysweep.model.checkpoint import (
    DCP_DIR,
    OLD_DIR,
    StageCheckpointError,
    check_stage,
    init_backbone,
    is_sharded,
    is_stage_output,
    read_full,
)
from raysweep.model.parallelize import parallelize
from raysweep.model.task_model import TaskModel
from raysweep.tasks import get_task

BACKBONE = "backbone."


def build_task_model(source: str | Path | None, tasks: list[str], seed: int, mesh,
                     parallel: ParallelConfig | None = None, lora: dict[str, Any] | None = None,
                     scratch: LlamaArgs | None = None) -> TaskModel:
    """The TaskModel a stage trains: the backbone from `source` (None: a fresh one of shape
    `scratch`), one fresh seeded head per task, LoRA adapters if `lora`, wrapped and sharded
    over `mesh` (None: one plain process) as `parallel` says."""
    torch.manual_seed(seed)
    if source is None:
        # From scratch (the tiny models' pretraining): built whole and seeded, as before, since
        # its random init must not depend on the world size, and a tiny model fits anywhere.
        model = TaskModel(init_backbone(scratch, seed))
        _add_heads(model, tasks, seed)
        if lora:
            _apply_lora(model, lora)
        model = parallelize(model, mesh, parallel)
        if lora:
            _reset_lora(model, seed)
        return model
    src = resolve(source)
    with torch.device("meta"):
        model = TaskModel(LlamaModel(src.config))
    heads = _add_heads(model, tasks, seed)
    model.heads.to("meta")
    if lora:
        _apply_lora(model, lora)
    parallelize(model, mesh, parallel)
    model.to_empty(device=mesh.device_type if mesh is not None else "cpu")
    with torch.no_grad():
        fill_backbone(model, src)
        reset_rope(model)
        for name, p in model.named_parameters():
            if name in heads:
                _set_local(p, heads[name])
    if lora:
        _reset_lora(model, seed)
    return model


def _add_heads(model: TaskModel, tasks: list[str], seed: int) -> dict[str, Tensor]:
    """Fresh heads on the CPU, seeded as always; returns their initial values by name."""
    torch.manual_seed(seed + 1)
    with torch.device("cpu"):
        for name in tasks:
            model.add_head(get_task(name))
    return {f"heads.{k}": v.detach().clone() for k, v in model.heads.state_dict().items()}


def _apply_lora(model: TaskModel, cfg: dict[str, Any]) -> None:
    from raysweep.model.lora import apply_lora

    apply_lora(model, cfg)


def _reset_lora(model: TaskModel, seed: int) -> None:
    from raysweep.model.lora import reset_lora

    reset_lora(model, seed)


# --- sources -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Source:
    """Where a backbone's weights are: `kind` "hf" (safetensors under `path`, names prefixed by
    `prefix`) or "dcp" (a sharded stage output; with `meta["lora"]`, adapters over a base)."""

    kind: str
    path: Path
    config: LlamaConfig
    prefix: str = ""
    meta: dict[str, Any] | None = None


def resolve(source: str | Path) -> Source:
    path = Path(source)
    if is_stage_output(path):
        if is_sharded(path):
            meta = check_stage(path)
            return Source("dcp", path, LlamaConfig.from_dict(meta["model_config"]), meta=meta)
        path = path / OLD_DIR  # the older format: its backbone is an HF directory
    elif not path.is_dir():  # a hub id: the cluster's HF cache (or the hub) has it
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors"]))
    if not any(path.glob("*.safetensors")):
        raise StageCheckpointError(f"{source}: no safetensors weights to load (a stage output "
                                   "has meta.json and dcp/ or backbone/; an HF checkpoint "
                                   "has config.json and *.safetensors)")
    keys = _hf_keys(path)
    prefix = "model." if "model.embed_tokens.weight" in keys else ""
    if prefix + "embed_tokens.weight" not in keys:
        raise StageCheckpointError(f"{path}: not a LLaMA checkpoint (no embed_tokens.weight, "
                                   "nor model.embed_tokens.weight)")
    return Source("hf", path, LlamaConfig.from_pretrained(path), prefix=prefix)


def _hf_keys(path: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for f in path.glob("*.safetensors"):
        with safe_open(f, framework="pt") as st:  # reads the header only
            keys.update(st.keys())
    return keys


def fill_backbone(model: TaskModel, src: Source) -> None:
    """Fill the backbone's local shards (already allocated) from `src`, in place: each rank
    reads only its own slices. A LoRA model's base weights (`...q_proj.base_layer.weight`) take
    the source's `...q_proj.weight`; its adapters are left to `reset_lora`."""
    targets = {}
    for name, t in model.state_dict().items():
        if name.startswith(BACKBONE) and not _is_adapter(name):
            plain = name.replace(".base_layer.", ".")
            key = src.prefix + plain[len(BACKBONE):] if src.kind == "hf" else plain
            targets[key] = t
    if src.kind == "hf":
        dcp.load(targets, storage_reader=dcp.HuggingFaceStorageReader(str(src.path)))
        return
    if src.meta.get("lora"):  # adapters only: the base first, then the adapters merged in
        fill_backbone(model, resolve(_base_of(src)))
        merge_adapters(model, src)
        return
    dcp.load(targets, checkpoint_id=src.path / DCP_DIR)


def _base_of(src: Source) -> Path | str:
    """A LoRA stage's base: its sibling stage directory when it was one (so a store can move),
    else the source it recorded."""
    base = src.meta.get("base") or {}
    if base.get("stage") and (src.path.parent / base["stage"]).is_dir():
        return src.path.parent / base["stage"]
    if not base.get("source"):
        raise StageCheckpointError(f"{src.path}: a LoRA stage output whose meta.json names no "
                                   "base (meta.json['base'])")
    return base["source"]


def merge_adapters(model: TaskModel, src: Source) -> None:
    """Add a LoRA stage's adapters into the backbone's weights: W += (alpha / r) * B @ A (peft's
    merge). Every rank reads the (small) adapters whole and adds its own rows."""
    lora = src.meta["lora"]
    scale = float(lora["alpha"]) / float(lora["r"])
    a_keys = [k for k in src.meta["tensors"] if ".lora_A." in k]
    adapters = read_full(src.path, a_keys + [k.replace(".lora_A.", ".lora_B.") for k in a_keys])
    params = dict(model.named_parameters())
    for a_key in a_keys:
        module = a_key.split(".lora_A.")[0]
        weight = next((params[n] for n in (f"{module}.base_layer.weight", f"{module}.weight")
                       if n in params), None)
        if weight is None:
            raise StageCheckpointError(f"{src.path}: adapter {a_key} adapts no layer of the model")
        delta = scale * adapters[a_key.replace(".lora_A.", ".lora_B.")] @ adapters[a_key]
        _set_local(weight, delta, add=True)


def reset_rope(model: nn.Module) -> None:
    """Recompute the rotary embeddings' non-persistent buffers (`to_empty` left them garbage)
    as the module's constructor does, on the CPU like a normally built model."""
    for m in model.modules():
        if hasattr(m, "inv_freq") and hasattr(m, "original_inv_freq"):
            with torch.device("cpu"):
                fresh = type(m)(m.config)
            m.inv_freq.copy_(fresh.inv_freq)
            m.original_inv_freq.copy_(fresh.original_inv_freq)


def _set_local(p: Tensor, full: Tensor, add: bool = False) -> None:
    """Set (or add to) this rank's shard of `p` from the whole tensor `full`, which every rank
    has: each takes its own slice without a collective (`src_data_rank=None`)."""
    local = p.to_local() if isinstance(p, DTensor) else p
    if isinstance(p, DTensor):
        full = distribute_tensor(full.to(p.device, p.dtype), p.device_mesh, p.placements,
                                 src_data_rank=None).to_local()
    (local.add_ if add else local.copy_)(full)


def _is_adapter(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name
