"""Per-head-kind feature encoding: the data side of each head (the nn side is
`raysweep.model.heads`). One `Encoder` class per head kind, looked up with `encoder_for(task)`:

- `encode(split, tokenizer, max_length)`: canonical examples -> a list of feature dicts
  (lists of ints; every feature carries `example_index`, its example's position in the split);
- `collate(features, pad_id)`: features -> a batch of tensors (right padding);
- `predict(split, features, logits)`: all logits of a split -> one prediction per example, in the
  form the task's metric takes.

One generic loop evaluates every kind (`raysweep.train.evaluate`):

    E = encoder_for(task)
    features = E.encode(split, tokenizer, max_length)
    logits = [model(task.name, E.collate(features[i:i + bs], pad_id))
              for i in range(0, len(features), bs)]          # batches in feature order
    predictions = E.predict(split, features, logits)

`predict` pairs the rows of the logits batches, in order, with `features`: the engine must keep
the features in the order `encode` returned them and must not drop any. Feature keys that are not
tensors (`offsets` for span QA, `word_ids` for tagging, `side`/`candidate_index` for retrieval)
are read by `predict` from the feature list, not from the batch; `collate` ignores them.

Prediction formats (what `raysweep.tasks.metrics` takes):

| kind              | logits per batch          | prediction per example               |
| ----------------- | ------------------------- | ------------------------------------ |
| `seq_cls`         | B x num_labels            | label id (int)                       |
| `multiple_choice` | B x C (one score/choice)  | choice index (int)                   |
| `token_cls`       | B x T x num_labels        | tuple of tag strings, one per word   |
| `span_qa`         | B x T x 2 (start, end)    | answer text (str; "" = no answer)    |
| `retrieval`       | B x H (pooled embedding)  | `Ranking`: candidate ids, best first |
| `causal_lm`       | B x T x V                 | (summed NLL, number of tokens)       |
"""

from __future__ import annotations

from raysweep.tasks.base import Task
from raysweep.tasks.encoding.base import Encoder, Feature, label_names_for
from raysweep.tasks.encoding.retrieval import Ranking, RetrievalEncoder
from raysweep.tasks.encoding.sequence import (
    CausalLMEncoder,
    MultipleChoiceEncoder,
    SequenceClassificationEncoder,
)
from raysweep.tasks.encoding.span_qa import SpanQAEncoder
from raysweep.tasks.encoding.tagging import TokenClassificationEncoder

ENCODERS: dict[str, type[Encoder]] = {
    cls.kind: cls
    for cls in (SequenceClassificationEncoder, MultipleChoiceEncoder, TokenClassificationEncoder,
                SpanQAEncoder, RetrievalEncoder, CausalLMEncoder)
}


def encoder_for(task: Task) -> type[Encoder]:
    return ENCODERS[task.head]


__all__ = ["ENCODERS", "CausalLMEncoder", "Encoder", "Feature", "MultipleChoiceEncoder",
           "Ranking", "RetrievalEncoder", "SequenceClassificationEncoder", "SpanQAEncoder",
           "TokenClassificationEncoder", "encoder_for", "label_names_for"]
