"""Model sizes as plain numbers (torchtitan's "model args"): each size reports its own parameter
count and training FLOPs by arithmetic, so the spec and the plan can size a model without torch.

This module must import without torch or transformers (tests/test_model_args.py checks it):
`LlamaArgs.to_hf_config` imports transformers only when called.

- `LlamaArgs`: the shape of a `transformers.LlamaModel` (+ LM head); `n_params`, `flops_per_token`,
  `to_hf_config`, `from_hf_config`.
- `TINY_SIZES` / `tiny_args(name, vocab_size)`: the named tiny shapes for CPU runs
  (name -> shape + pretrain_steps).
- `ParallelConfig`: how `raysweep.model.parallelize` wraps a model (precision, activation
  checkpointing, compile). It lives here, torch-free, so a plan can carry it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal


@dataclass(frozen=True)
class LlamaArgs:
    """A LLaMA shape: what `transformers.LlamaModel` builds from a `LlamaConfig` with no biases
    and `head_dim = hidden // heads` (every LLaMA-family checkpoint we use)."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    max_positions: int
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise ValueError(f"{self}: hidden must divide by heads, and heads by kv_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def n_params(self, with_lm_head: bool = True) -> int:
        """Parameters of the backbone (+ the LM head, which a tied model shares with the
        embedding), as `sum(p.numel() for p in model.parameters())` counts them."""
        kv = self.kv_heads * self.head_dim
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * kv  # q, o; k, v
        mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        layer = attention + mlp + 2 * self.hidden  # + input and post-attention RMSNorm weights
        n = self.vocab * self.hidden + self.layers * layer + self.hidden  # + final norm
        if with_lm_head and not self.tie_embeddings:
            n += self.vocab * self.hidden
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 x non-embedding params + attention (Kaplan/Chinchilla, as
        torchtitan's `get_num_flop_per_token`). Non-embedding: everything a token multiplies by,
        i.e. the layers, final norm and the LM head's matmul (tied or not), but not the lookup."""
        non_embedding = self.n_params(with_lm_head=False) - self.vocab * self.hidden
        lm_head = self.vocab * self.hidden  # its matmul costs the same, tied or not
        return 6.0 * (non_embedding + lm_head) + 12 * self.layers * self.hidden * seq_len

    def to_hf_config(self):
        """The `transformers.LlamaConfig` of this shape (the tiny models' special-token ids)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab,
            max_position_embeddings=self.max_positions,
            rms_norm_eps=1e-6,
            tie_word_embeddings=self.tie_embeddings,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            attn_implementation="sdpa",
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
        )

    @classmethod
    def from_hf_config(cls, config: Any) -> LlamaArgs:
        """The shape of a loaded model's `LlamaConfig` (read by attribute: no transformers
        import). Shapes this arithmetic does not cover (biases, another head_dim) are refused
        rather than miscounted."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        biases = getattr(config, "attention_bias", False), getattr(config, "mlp_bias", False)
        if any(biases) or head_dim * heads != config.hidden_size:
            raise ValueError("LlamaArgs counts bias-free LLaMAs with head_dim = hidden / heads; "
                             f"this config has (attention_bias, mlp_bias)={biases}, "
                             f"head_dim={head_dim}")
        return cls(
            hidden=config.hidden_size,
            intermediate=config.intermediate_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=config.num_key_value_heads or heads,
            vocab=config.vocab_size,
            max_positions=config.max_position_embeddings,
            tie_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        )


def _shape(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
           pretrain_steps: int) -> Mapping[str, int]:
    # transformers' field names: `dict(TINY_SIZES[name])` is what the plan hashes into the
    # pretrain stage key, unchanged since these were `TINY_CONFIGS` (keys stay stable).
    return MappingProxyType({
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "pretrain_steps": pretrain_steps})


# Named tiny LLaMA shapes for CPU (read-only). The vocabulary comes from the tokenizer (the
# synthetic world's), so parameter counts are computed, never written down. `pretrain_steps` is
# each size's pretraining budget: it grows with size, in the spirit of tokens ∝ params.
TINY_SIZES: Mapping[str, Mapping[str, int]] = MappingProxyType({
    # 0.020M / 0.102M / 0.875M / 1.78M parameters with the default synthetic world's
    # vocabulary (535 tokens); per-step cost on one CPU thread, batch 32 x 44 tokens, about
    # 15 / 31 / 137 / 266 ms. See raysweep/data/DESIGN.md.
    "llama-tiny-xs": _shape(16, 48, layers=1, heads=2, kv_heads=1, pretrain_steps=300),
    "llama-tiny-s": _shape(48, 128, layers=2, heads=4, kv_heads=2, pretrain_steps=400),
    "llama-tiny-m": _shape(128, 352, layers=4, heads=4, kv_heads=2, pretrain_steps=450),
    "llama-tiny-l": _shape(192, 512, layers=4, heads=6, kv_heads=2, pretrain_steps=600),
})


def tiny_args(name: str, vocab_size: int, max_positions: int = 256) -> LlamaArgs:
    """The named tiny shape with the tokenizer's vocabulary."""
    if name not in TINY_SIZES:
        raise KeyError(f"unknown tiny config {name!r}; known: {', '.join(TINY_SIZES)}")
    s = TINY_SIZES[name]
    return LlamaArgs(hidden=s["hidden_size"], intermediate=s["intermediate_size"],
                     layers=s["num_hidden_layers"], heads=s["num_attention_heads"],
                     kv_heads=s["num_key_value_heads"], vocab=vocab_size,
                     max_positions=max_positions)


@dataclass(frozen=True)
class ParallelConfig:
    """How `parallelize` wraps a model. The defaults are the one home of each default and give
    today's behaviour: fp32, no activation checkpointing, no compile.

    `precision` is FSDP2's mixed-precision policy ("bf16": bf16 parameters in compute, fp32
    gradient reduction); a plain single process (no mesh) computes in fp32.
    `activation_checkpointing`: "full" recomputes every decoder layer in backward; "selective"
    every other layer (torchtitan's layer-selective AC with `selective_ac_option="2"`), about
    half the activation memory saved for half the recompute."""

    precision: Literal["fp32", "bf16"] = "fp32"
    activation_checkpointing: Literal["none", "full", "selective"] = "none"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.activation_checkpointing not in CHECKPOINTING:
            raise ValueError(f"activation_checkpointing must be one of {CHECKPOINTING}, not "
                             f"{self.activation_checkpointing!r}")

    @classmethod
    def from_stage(cls, stage: Any) -> ParallelConfig:
        """The wrapping a training stage's config (`raysweep.plan.stages.TrainingConfig`, read by
        attribute: model/ does not import plan/) asks for; a stage without these fields (eval)
        gets the defaults."""
        default = cls()
        return cls(precision=getattr(stage, "precision", default.precision),
                   activation_checkpointing=getattr(stage, "activation_checkpointing",
                                                    default.activation_checkpointing))


PRECISIONS = ("fp32", "bf16")
CHECKPOINTING = ("none", "full", "selective")
# The module names a LoRA `target_modules` entry may match in a LLaMA decoder layer (the
# `transformers.LlamaModel` attribute names): what the spec check compares against, torch-free.
LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                        "down_proj")
