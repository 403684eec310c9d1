"""Per-rank memory of a stage, by arithmetic (torch-free), and the check a launch makes with it.

`estimate_memory(args, stage, workers)` counts, in GB per rank, what one training step of an
FSDP2 job holds at its peak:

- parameters: sharded over the ranks and kept in fp32 whatever the precision (FSDP2's
  `MixedPrecisionPolicy` keeps the sharded fp32 parameters as the optimizer's master copy and
  casts each gathered layer to bf16 for compute);
- gradients (fp32, sharded: gradients are reduce-scattered in fp32) and AdamW's m and v (fp32,
  sharded): only for trainable parameters, so a LoRA stage's frozen base has neither;
- gathered: the unsharded layers in flight. On GPUs every layer but the last is resharded after
  forward, so about two layers' compute-dtype weights plus one layer's unsharded gradient
  (compute dtype, then fp32 for the reduction) are alive at once, plus the root module
  (embeddings, final norm, LM head); on CPU (gloo) layers stay gathered from forward to
  backward (`raysweep.model.parallelize`), so all of them are. A single rank holds no copies.
- activations of one micro batch (`micro_batch_size` per rank, else the whole per-rank batch)
  at `max_length` tokens: the tensors a LLaMA decoder layer saves for backward (two RMSNorms in
  fp32, q/k/v, attention output, the SwiGLU MLP's four intermediate-size tensors), times the
  layers kept: all of them without checkpointing, only each layer's input with "full" (plus one
  layer recomputed in backward), half of them with "selective" (every other layer); plus one
  layer's worth of backward working set and the head's logits (the LM head's are vocabulary-
  wide, kept in fp32 for the loss). Attention is counted without the (sequence x sequence)
  score matrix: flash / memory-efficient SDPA kernels do not keep it.
- the optimizer step, once backward has freed activations and gathered layers: AdamW's
  foreach update makes one fp32 temporary per trainable parameter (sqrt(v)); the peak is the
  larger of backward's and the step's.
- an eval stage is forward only under `no_grad`: parameters, gathered layers, and the widest
  moment of one layer (the residual stream, the MLP's gate, up and product), and the logits.

What is not counted: the CUDA context, NCCL buffers and allocator fragmentation; the launch
check (`raysweep.plan.cost.check_fits`) leaves `GPU_RESERVE_GB` for them. tests/test_memory.py
checks the estimate against the measured peak RSS of real CPU training steps.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from raysweep.model.args import LlamaArgs, tiny_args
from raysweep.plan.stages import EvalConfig, StageConfig, TrainingConfig
from raysweep.spec.space import LoraSpec

GB = 1e9
DTYPE_BYTES = {"fp32": 4, "bf16": 2}
FP32 = 4
ADAM_STATES = 2  # AdamW's m and v, fp32 each
# GPU memory per worker when a GPU space does not say (`resources.gpu_memory_gb`): an 80 GB card.
DEFAULT_GPU_MEMORY_GB = 80.0
# Left free on each GPU for what the estimate does not count (CUDA context, NCCL, fragmentation).
GPU_RESERVE_GB = 4.0

# The shapes of the HF checkpoints the spaces name, so that a plan sizes them without
# downloading anything (their config.json files; a local directory's config.json is read).
KNOWN_SHAPES: dict[str, LlamaArgs] = {
    "huggyllama/llama-7b": LlamaArgs(hidden=4096, intermediate=11008, layers=32, heads=32,
                                     kv_heads=32, vocab=32000, max_positions=2048),
    "huggyllama/llama-13b": LlamaArgs(hidden=5120, intermediate=13824, layers=40, heads=40,
                                      kv_heads=40, vocab=32000, max_positions=2048),
    "huggyllama/llama-30b": LlamaArgs(hidden=6656, intermediate=17920, layers=60, heads=52,
                                      kv_heads=52, vocab=32000, max_positions=2048),
    "huggyllama/llama-65b": LlamaArgs(hidden=8192, intermediate=22016, layers=80, heads=64,
                                      kv_heads=64, vocab=32000, max_positions=2048),
}


@dataclass(frozen=True)
class MemoryEstimate:
    """GB per rank at the peak of one step: the states (params, grads, optimizer) plus the
    larger of backward's peak (gathered + activations) and the optimizer step's temporaries."""

    params: float
    grads: float
    optimizer: float
    gathered: float
    activations: float
    step_temp: float  # the optimizer step's temporaries (after backward freed the activations)
    precision: str
    checkpointing: str
    micro_batch: int
    seq_len: int
    workers: int
    lora: bool

    @property
    def total(self) -> float:
        states = self.params + self.grads + self.optimizer
        return states + max(self.gathered + self.activations, self.step_temp)

    def breakdown(self) -> dict[str, float]:
        parts = {k: float(f"{v:.4g}") for k, v in asdict(self).items() if isinstance(v, float)}
        return {**parts, "total": float(f"{self.total:.4g}")}


def linear_shapes(a: LlamaArgs) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear module of a decoder layer, by its `transformers` name."""
    kv = a.kv_heads * a.head_dim
    return {"q_proj": (a.hidden, a.hidden), "k_proj": (a.hidden, kv), "v_proj": (a.hidden, kv),
            "o_proj": (a.hidden, a.hidden), "gate_proj": (a.hidden, a.intermediate),
            "up_proj": (a.hidden, a.intermediate), "down_proj": (a.intermediate, a.hidden)}


def layer_params(a: LlamaArgs) -> int:
    return sum(i * o for i, o in linear_shapes(a).values()) + 2 * a.hidden


def lora_params(a: LlamaArgs, lora: dict) -> int:
    """Adapter parameters: r x (in + out) per targeted linear module per layer."""
    shapes = linear_shapes(a)
    per_layer = sum(lora["r"] * sum(shapes[m]) for m in lora["target_modules"] if m in shapes)
    return a.layers * per_layer


def activations_per_token(a: LlamaArgs, dtype_bytes: int) -> float:
    """Bytes one decoder layer keeps for backward per token: each RMSNorm its fp32 input and
    normalized product plus its output; q, k, v and the attention output (twice: the kernel's
    and o_proj's reshaped input); the MLP's gate, up, silu(gate) and product."""
    kv = a.kv_heads * a.head_dim
    norms = 2 * (2 * a.hidden * FP32 + a.hidden * dtype_bytes)
    attention = (3 * a.hidden + 2 * kv) * dtype_bytes
    mlp = 4 * a.intermediate * dtype_bytes
    return norms + attention + mlp


def uses_lm_head(stage: StageConfig) -> bool:
    """Does the stage train a vocabulary-wide head (pretraining, or an LM task in a mixture)?"""
    if stage.kind == "pretrain":
        return True
    mixture = getattr(stage, "mixture", None) or {}
    if not mixture:
        return False
    from raysweep.tasks import get_task

    return any(get_task(t).head == "causal_lm" for t in mixture)


def estimate_memory(args: LlamaArgs, stage: StageConfig, workers: int, *, gpu: bool = True,
                    like: TrainingConfig | None = None) -> MemoryEstimate:
    """Per-rank GB of one step of `stage` on `workers` FSDP2 ranks (see the module docstring).

    An eval stage has no sequence length or precision of its own: it runs at those of the
    target stage it evaluates, given as `like`. `gpu`: whether layers are resharded after
    forward (GPU) or stay gathered (CPU/gloo)."""
    forward_only = isinstance(stage, EvalConfig)
    how = like if forward_only else stage
    if how is None:
        raise ValueError("an eval stage is estimated at its target stage's settings: pass like=")
    precision, seq = how.precision, how.max_length
    ac = "none" if forward_only else how.activation_checkpointing
    lora = None if forward_only else how.lora
    cb = DTYPE_BYTES[precision]
    lm = uses_lm_head(stage)
    n_total = args.n_params(with_lm_head=lm)
    if forward_only:
        micro = stage.batch_size
    else:
        micro = how.micro_batch_size or math.ceil(how.batch_size / workers)
    trainable = 0 if forward_only else (
        lora_params(args, lora) + (args.vocab * args.hidden if lm else 0) if lora else n_total)
    if lora:
        n_total += lora_params(args, lora)
    lp = layer_params(args)
    root = n_total - args.layers * lp  # embeddings, final norm, LM head: FSDP2's root unit
    if workers == 1:
        gathered = 0.0
    elif gpu:  # two layers' weights in flight, one layer's gradient before its reduction
        gathered = 2 * lp * cb + (0 if forward_only else lp * (cb + FP32)) + root * cb
    else:
        gathered = n_total * cb + (0 if forward_only else lp * (cb + FP32))
    tokens = micro * seq
    layer_act = activations_per_token(args, cb) * tokens
    layer_input = args.hidden * cb * tokens
    logits = tokens * (args.vocab * (cb + FP32) if lm else 0)
    if forward_only:  # nothing kept: the residual stream and the MLP's widest moment
        acts = (2 * args.hidden + 3 * args.intermediate) * cb * tokens + logits
    else:
        kept = {"none": args.layers * layer_act,
                "full": args.layers * layer_input + layer_act,
                "selective": math.ceil(args.layers / 2) * layer_act
                + args.layers // 2 * layer_input + layer_act}[ac]
        acts = kept + layer_act + logits  # + one layer's backward working set
    return MemoryEstimate(
        params=n_total * FP32 / workers / GB, grads=trainable * FP32 / workers / GB,
        optimizer=trainable * ADAM_STATES * FP32 / workers / GB, gathered=gathered / GB,
        activations=acts / GB, step_temp=trainable * FP32 / workers / GB, precision=precision, checkpointing=ac, micro_batch=micro,
        seq_len=seq, workers=workers, lora=bool(lora))


# --- the models of a space -------------------------------------------------------------------

def model_args(spec, m) -> LlamaArgs | None:
    """The shape of a space's model: a tiny one's with the world's vocabulary; an HF one's from
    `KNOWN_SHAPES` or a local directory's config.json; None where neither knows it."""
    if m.tiny is not None:
        from raysweep.plan.build import world_of
        from raysweep.data.world import get_world

        return tiny_args(m.tiny, len(get_world(world_of(spec, m)).vocab))
    if m.hf in KNOWN_SHAPES:
        return KNOWN_SHAPES[m.hf]
    config = Path(m.hf) / "config.json"
    if config.is_file():
        from types import SimpleNamespace

        return LlamaArgs.from_hf_config(SimpleNamespace(**json.loads(config.read_text())))
    return None


def gpu_budget_gb(spec, m) -> float | None:
    """GPU memory per worker, or None where the workers have no GPU (no budget to check)."""
    if spec.gpus_per_worker(m) == 0:
        return None
    return spec.resources.gpu_memory_gb or DEFAULT_GPU_MEMORY_GB


def fixes(args: LlamaArgs, stage: TrainingConfig, workers: int, budget: float) -> list[str]:
    """Single changes that would bring `stage` within `budget`, by the same estimate."""
    import dataclasses

    def fits(s: TrainingConfig, w: int) -> bool:
        return estimate_memory(args, s, w).total + GPU_RESERVE_GB <= budget

    out = []
    for w in (workers * 2, workers * 4, workers * 8):
        if fits(stage, w):
            out.append(f"workers: {w}")
            break
    if stage.activation_checkpointing != "full":
        for ac in ("selective", "full"):
            if fits(dataclasses.replace(stage, activation_checkpointing=ac), workers):
                out.append(f"activation_checkpointing: {ac}")
                break
    micro = stage.micro_batch_size or math.ceil(stage.batch_size / workers)
    for mb in range(micro - 1, 0, -1):
        if fits(dataclasses.replace(stage, micro_batch_size=mb), workers):
            out.append(f"micro_batch_size: {mb}")
            break
    if stage.precision != "bf16" and fits(dataclasses.replace(stage, precision="bf16"), workers):
        out.append("precision: bf16")
    if not stage.lora:
        lora = LoraSpec().model_dump(mode="json")  # the space's own LoRA defaults
        if fits(dataclasses.replace(stage, lora=lora), workers):
            out.append(f"finetune: {{lora: {{r: {lora['r']}}}}}")
    return out
