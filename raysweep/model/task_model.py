"""The task model: one LLaMA backbone (`transformers.LlamaModel`) with one head per task
(`raysweep.model.heads`). Sizes are in `raysweep.model.args`, loading and saving in
`raysweep.model.checkpoint`, sharding in `raysweep.model.parallelize`.
"""

from __future__ import annotations

from torch import Tensor, nn
from transformers import LlamaConfig, LlamaModel

from raysweep.model.heads import HEADS, Head
from raysweep.tasks.base import Task


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
        """A fresh head of the task's kind (initialized from torch's current RNG state)."""
        head = HEADS[task.head](self.config.hidden_size, task, vocab_size=self.config.vocab_size)
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
