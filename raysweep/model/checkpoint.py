"""Backbones in and out: a fresh one from a size, and the stage-output format on disk.

A stage output (`<stages>/<kind>-<key>/`), as written now, is sharded with
`torch.distributed.checkpoint` (DCP): every rank writes its own shard of the TaskModel's state
dict (backbone and heads) under `dcp/`, and rank 0 writes `meta.json`, which records the model's
`LlamaConfig`, every saved tensor's shape, and (for a LoRA stage, which saves only its adapters
and heads) the LoRA settings and the base it was trained on. Loading reshards: a later stage with
another worker count reads the same files (`raysweep.model.load`).

The format written before (still read, so existing stores stay valid): `backbone/` (HF format,
config.json + model.safetensors), `heads.safetensors` and `meta.json`.

Whatever the format, heads are written but not read back by a later stage: each stage starts
fresh heads. `raysweep export` turns a stage output into a `from_pretrained` directory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from transformers import LlamaConfig, LlamaModel

from raysweep.model.args import LlamaArgs

DCP_DIR, OLD_DIR, META = "dcp", "backbone", "meta.json"
FORMAT = "dcp"  # meta.json's "format" for a sharded stage output


class StageCheckpointError(ValueError):
    """A stage output that cannot be read as it claims to be (shards against meta.json)."""


def init_backbone(args: LlamaArgs, seed: int) -> LlamaModel:
    """A freshly initialized backbone of this shape (seeded)."""
    config = args.to_hf_config()
    torch.manual_seed(seed)
    return LlamaModel(config)


# --- writing -------------------------------------------------------------------------------------

def save_stage(path: Path, model: nn.Module, meta: dict[str, Any],
               adapters_only: bool = False) -> None:
    """Write a stage output: every rank its own shard of the model's state dict (a collective:
    every rank calls, with the same `path`), then rank 0 `meta.json` (`meta` plus the format,
    the model's config and every saved tensor's shape). `adapters_only` (LoRA): the frozen base
    is left out (`ignore_frozen_params`); `meta` should then name the base ("lora", "base").

    Atomic with the stage store: `path` is the holder's private directory, which the store
    moves into the output directory and marks done only after this returns on rank 0 (and DCP's
    rank 0 writes `dcp/.metadata` only once every rank's shard is written); a writer that
    crashes or loses its lease leaves nothing in the output directory (`raysweep.run.store`)."""
    path = Path(path)
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:  # shards of a crashed earlier writer (maybe another world size) must not linger
        shutil.rmtree(path / DCP_DIR, ignore_errors=True)
        (path / META).unlink(missing_ok=True)
    if dist.is_initialized():
        dist.barrier()
    state = get_model_state_dict(model, options=StateDictOptions(
        ignore_frozen_params=adapters_only))
    dcp.save(state, checkpoint_id=path / DCP_DIR)
    if rank0:
        config = model.config if hasattr(model, "config") else model.backbone.config
        meta = {**meta, "format": FORMAT, "model_config": config.to_dict(),
                "tensors": {k: list(v.shape) for k, v in state.items()},
                "world_size": dist.get_world_size() if dist.is_initialized() else 1}
        (path / META).write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    if dist.is_initialized():
        dist.barrier()


def save_training(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """A mid-stage checkpoint's tensors: the model's and the optimizer's state, sharded with DCP
    (a collective: every rank calls). `path` may be a directory of this rank's own (a Train
    worker's local checkpoint dir): each rank writes only its `__<rank>_0.distcp` there, rank 0
    also `.metadata`; Ray Train merges the ranks' directories into one."""
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=Path(path))


def load_training(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read `save_training`'s tensors back into a model and optimizer built as they were (a
    collective; DCP reshards, so the world size may differ)."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=Path(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optim"])


def save_hf(path: Path, backbone_state: dict[str, Tensor], heads_state: dict[str, Tensor],
            config: LlamaConfig) -> None:
    """A `from_pretrained` directory: config.json + model.safetensors (a `LlamaModel`), and the
    heads beside it in heads.safetensors (which from_pretrained ignores)."""
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    save_file({k: v.contiguous() for k, v in backbone_state.items()},
              path / "model.safetensors", metadata={"format": "pt"})
    if heads_state:
        save_file({k: v.contiguous() for k, v in heads_state.items()},
                  path / "heads.safetensors", metadata={"format": "pt"})


# --- reading -------------------------------------------------------------------------------------

def is_stage_output(path: str | Path) -> bool:
    path = Path(path)
    return (path / META).is_file() and ((path / DCP_DIR).is_dir() or (path / OLD_DIR).is_dir())


def is_sharded(path: str | Path) -> bool:
    return (Path(path) / DCP_DIR).is_dir()


def read_meta(path: str | Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / META).read_text())
    except (OSError, ValueError) as e:
        raise StageCheckpointError(f"{path}: stage output without a readable {META} ({e}); "
                                   "delete the directory so the stage is computed again") from e


def stage_config(path: str | Path) -> LlamaConfig:
    """The backbone config of a stage output (either format)."""
    path = Path(path)
    if is_sharded(path):
        return LlamaConfig.from_dict(read_meta(path)["model_config"])
    return LlamaConfig.from_pretrained(path / OLD_DIR)


def check_stage(path: str | Path) -> dict[str, Any]:
    """A sharded stage output's meta.json, once its shards are checked against it: DCP's
    `.metadata` must hold exactly the tensors meta.json lists, with their shapes, each tensor's
    chunks must cover it, and every shard file must hold the bytes `.metadata` points at.
    Raises StageCheckpointError naming the directory and what is wrong."""
    path = Path(path)
    meta = read_meta(path)
    problems = []
    try:
        reader = dcp.FileSystemReader(path / DCP_DIR)
        md = reader.read_metadata()
        reader.set_up_storage_reader(md, is_coordinator=False)
    except Exception as e:  # a missing or corrupt .metadata
        problems.append(f"cannot read {DCP_DIR}/.metadata ({type(e).__name__}: {e})")
        md = None
    if md is not None:
        expected = meta.get("tensors", {})
        saved = {k: v for k, v in md.state_dict_metadata.items() if hasattr(v, "size")}
        if missing := sorted(set(expected) - set(saved)):
            problems.append(f"{len(missing)} tensors of meta.json missing from the shards "
                            f"(e.g. {missing[:3]})")
        if extra := sorted(set(saved) - set(expected)):
            problems.append(f"{len(extra)} tensors in the shards that meta.json does not list "
                            f"(e.g. {extra[:3]})")
        for k in sorted(set(expected) & set(saved)):
            size = list(saved[k].size)
            if size != list(expected[k]):
                problems.append(f"{k}: shape {size} in the shards, {expected[k]} in meta.json")
            covered = sum(torch.Size(c.sizes).numel() for c in saved[k].chunks)
            if covered != torch.Size(size).numel():
                problems.append(f"{k}: the shards hold {covered} of its "
                                f"{torch.Size(size).numel()} elements")
        needed: dict[str, int] = {}
        for info in reader.storage_data.values():
            needed[info.relative_path] = max(needed.get(info.relative_path, 0),
                                             info.offset + info.length)
        for name, end in sorted(needed.items()):
            f = path / DCP_DIR / name
            if not f.is_file():
                problems.append(f"shard file {name} is missing")
            elif f.stat().st_size < end:
                problems.append(f"shard file {name} is truncated ({f.stat().st_size} of "
                                f"{end} bytes)")
    if problems:
        raise StageCheckpointError(
            f"{path}: stage checkpoint shards do not match its metadata: "
            + "; ".join(problems[:6]) + ". Delete the directory so the stage is computed again.")
    return meta


def read_full(path: str | Path, keys: list[str]) -> dict[str, Tensor]:
    """Whole tensors from a sharded stage output, in this process alone (no collective): for
    what every rank needs entire and is small (LoRA adapters, heads), or for one-process export."""
    md = dcp.FileSystemReader(Path(path) / DCP_DIR).read_metadata().state_dict_metadata
    state = {k: torch.empty(tuple(md[k].size), dtype=md[k].properties.dtype) for k in keys}
    dcp.load(state, checkpoint_id=Path(path) / DCP_DIR, no_dist=True)
    return state
