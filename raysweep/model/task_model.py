"""Model sizes and loading: tiny LLaMA configs for CPU, real LLaMA checkpoints by HF id or path.

Every size is a `transformers.LlamaModel` backbone under a `TaskModel`, which holds one head per
task (`raysweep.tasks.heads`). Stage checkpoints store the backbone in HF format
(`save_pretrained`), so a stage output is itself a loadable LLaMA, plus the heads beside it.
Models declare their own FLOPs (`train_flops_per_token`), as torchtitan's do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaModel

from raysweep.tasks.base import Task
from raysweep.tasks.heads import Head, head_for

# Named tiny LLaMA shapes for CPU. The vocabulary comes from the tokenizer (the synthetic
# world's), so parameter counts are computed, never written down. `pretrain_steps` is each
# size's pretraining budget: it grows with size, in the spirit of tokens ∝ params.
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    # 0.020M / 0.102M / 0.875M / 1.78M parameters with the default synthetic world's
    # vocabulary (535 tokens); per-step cost on one CPU thread, batch 32 x 44 tokens, about
    # 15 / 31 / 137 / 266 ms. See raysweep/data/DESIGN.md.
    "llama-tiny-xs": dict(hidden_size=16, intermediate_size=48, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, pretrain_steps=300),
    "llama-tiny-s": dict(hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pretrain_steps=400),
    "llama-tiny-m": dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, pretrain_steps=450),
    "llama-tiny-l": dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4,
                         num_attention_heads=6, num_key_value_heads=2, pretrain_steps=600),
}


def tiny_config(name: str, vocab_size: int, max_positions: int = 256) -> LlamaConfig:
    if name not in TINY_CONFIGS:
        raise KeyError(f"unknown tiny config {name!r}; known: {', '.join(TINY_CONFIGS)}")
    shape = {k: v for k, v in TINY_CONFIGS[name].items() if k != "pretrain_steps"}
    return LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="sdpa",
        **shape,
    )


def count_params(config: LlamaConfig, with_lm_head: bool = True) -> int:
    """Parameters of backbone (+ LM head), counted on the meta device: no memory, no init."""
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaModel(config).parameters())
    if with_lm_head:
        n += config.vocab_size * config.hidden_size
    return n


def train_flops_per_token(config: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x non-embedding params + attention (Kaplan/Chinchilla, as in
    torchtitan's `get_num_flop_per_token`)."""
    n = count_params(config, with_lm_head=True) - config.vocab_size * config.hidden_size
    attn = 12 * config.num_hidden_layers * config.hidden_size * seq_len
    return 6.0 * n + attn


class TaskModel(nn.Module):
    """A LLaMA backbone with one head per task. `forward(task, batch)` returns that task's logits.

    Inputs with more than two dims (multiple choice: batch x choices x tokens) are flattened for
    the backbone and restored for the head."""

    def __init__(self, backbone: LlamaModel, heads: dict[str, Head] | None = None):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads or {})

    @property
    def config(self) -> LlamaConfig:
        return self.backbone.config

    def add_head(self, task: Task) -> Head:
        head = head_for(task)(self.config.hidden_size, task, vocab_size=self.config.vocab_size)
        self.heads[task.name] = head
        return head

    def forward(self, task: str, batch: dict[str, Tensor]) -> Tensor:
        head = self.heads[task]
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lead = ids.shape[:-1]
        out = self.backbone(
            input_ids=ids.reshape(-1, ids.shape[-1]),
            attention_mask=mask.reshape(-1, mask.shape[-1]),
            output_hidden_states=head.layer is not None,
            use_cache=False,
        )
        hidden = out.last_hidden_state if head.layer is None else out.hidden_states[head.layer]
        flat_batch = dict(batch, attention_mask=mask.reshape(-1, mask.shape[-1]))
        logits = head(hidden, flat_batch)
        if len(lead) > 1:  # a per-row score (multiple choice) goes back to batch x choices
            logits = logits.reshape(*lead, *logits.shape[1:])
        return logits


def init_backbone(config: LlamaConfig, seed: int) -> LlamaModel:
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
    with torch.device("meta"):
        skeleton = LlamaModel(config)
    skeleton.config.save_pretrained(path / "backbone")
    save_file({k: v.contiguous() for k, v in backbone_state.items()},
              path / "backbone" / "model.safetensors", metadata={"format": "pt"})
    if heads_state:
        save_file({k: v.contiguous() for k, v in heads_state.items()}, path / "heads.safetensors")
    (path / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))

