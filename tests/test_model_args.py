"""Model sizes count their own parameters and FLOPs by arithmetic: the counts equal those of the
real transformers model (built on the meta device), and `raysweep.model.args` imports without
torch, so the spec and the plan can use it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import LlamaForCausalLM, LlamaModel

from raysweep.model.args import TINY_SIZES, LlamaArgs, ParallelConfig, tiny_args


def _counted(args: LlamaArgs) -> tuple[int, int]:
    """(backbone, backbone + LM head) parameters of the real models, on the meta device."""
    config = args.to_hf_config()
    with torch.device("meta"):
        backbone = sum(p.numel() for p in LlamaModel(config).parameters())
        # parameters() yields a tied LM head once, as the embedding
        full = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    return backbone, full


@pytest.mark.parametrize("name", list(TINY_SIZES))
@pytest.mark.parametrize("vocab", [64, 535])
def test_tiny_counts_equal_the_real_model(name, vocab):
    args = tiny_args(name, vocab)
    backbone, full = _counted(args)
    assert args.n_params(with_lm_head=False) == backbone
    assert args.n_params() == full == backbone + vocab * args.hidden


# Llama-2-7B (MHA) and Llama-3-8B (GQA), whose published sizes are 6.74B and 8.03B.
BIG = {
    "llama2-7b": (LlamaArgs(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32,
                            vocab=32000, max_positions=4096), 6_738_415_616),
    "llama3-8b": (LlamaArgs(hidden=4096, intermediate=14336, layers=32, heads=32, kv_heads=8,
                            vocab=128256, max_positions=8192), 8_030_261_248),
}


@pytest.mark.parametrize("name", list(BIG))
def test_7b_like_counts_equal_the_real_model(name):
    args, published = BIG[name]
    backbone, full = _counted(args)
    assert args.n_params() == full == published
    assert args.n_params(with_lm_head=False) == backbone


def test_tied_embeddings_count_the_lm_head_once():
    args = LlamaArgs(hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2, vocab=100,
                     max_positions=64, tie_embeddings=True)
    backbone, full = _counted(args)
    assert args.n_params() == args.n_params(with_lm_head=False) == backbone == full


def test_flops_per_token():
    # 6 x non-embedding params (LM head included) + 12 L h seq, against the real model's count
    for name in TINY_SIZES:
        args = tiny_args(name, 535)
        _, full = _counted(args)
        expected = 6.0 * (full - args.vocab * args.hidden) + 12 * args.layers * args.hidden * 48
        assert args.flops_per_token(48) == expected
    # pinned: what the metrics tables of earlier sweeps were computed with
    assert tiny_args("llama-tiny-xs", 64).flops_per_token(48) == 34080.0
    assert tiny_args("llama-tiny-l", 535).flops_per_token(48) == 10506240.0
    args, published = BIG["llama2-7b"]
    assert args.flops_per_token(4096) == 6.0 * (published - 32000 * 4096) + 12 * 32 * 4096 * 4096


def test_hf_config_round_trip_and_refusals():
    args = tiny_args("llama-tiny-s", 535)
    config = args.to_hf_config()
    assert LlamaArgs.from_hf_config(config) == args
    assert (config.hidden_size, config.num_key_value_heads, config.tie_word_embeddings) == (
        48, 2, False)
    config.attention_bias = True
    with pytest.raises(ValueError, match="attention_bias"):
        LlamaArgs.from_hf_config(config)
    with pytest.raises(ValueError, match="divide"):
        LlamaArgs(hidden=50, intermediate=8, layers=1, heads=4, kv_heads=2, vocab=9,
                  max_positions=8)


def test_tiny_sizes_are_the_hashed_shapes():
    """`dict(TINY_SIZES[name])` goes into the pretrain stage key: it must stay what it was."""
    assert json.dumps(dict(TINY_SIZES["llama-tiny-xs"])) == json.dumps(
        {"hidden_size": 16, "intermediate_size": 48, "num_hidden_layers": 1,
         "num_attention_heads": 2, "num_key_value_heads": 1, "pretrain_steps": 300})
    assert [TINY_SIZES[n]["pretrain_steps"] for n in TINY_SIZES] == [300, 400, 450, 600]
    with pytest.raises(TypeError):
        TINY_SIZES["llama-tiny-xs"]["pretrain_steps"] = 1  # read-only
    with pytest.raises(KeyError, match="llama-tiny-xs"):
        tiny_args("llama-huge", 10)


def test_parallel_config_defaults_and_checks():
    assert ParallelConfig() == ParallelConfig("fp32", "none", False)
    with pytest.raises(ValueError, match="precision"):
        ParallelConfig(precision="fp16")
    with pytest.raises(ValueError, match="activation_checkpointing"):
        ParallelConfig(activation_checkpointing="some")
    assert ParallelConfig(activation_checkpointing="selective").activation_checkpointing


def test_args_import_without_torch():
    code = ("import sys, raysweep.model.args as a; a.tiny_args('llama-tiny-m', 535).n_params(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'numpy', 'ray')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
