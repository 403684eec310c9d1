"""A word-level fast tokenizer over the synthetic world's whole vocabulary.

Ids: <pad> 0, <s> 1, </s> 2, <sep> 3, <unk> 4 (the tiny LLaMA configs assume pad 0, bos 1,
eos 2). One text encodes as `<s> a </s>`, a pair as `<s> a <sep> b </s>`. Built in memory with
the `tokenizers` library (WordLevel + WhitespaceSplit + TemplateProcessing): nothing is read
from disk or downloaded, and offsets / `word_ids()` work as for any fast tokenizer.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from raysweep.data.config import normalize_world
from raysweep.data.grammar import BOS, EOS, PAD, SEP, UNK
from raysweep.data.world import get_world


@functools.lru_cache(maxsize=8)
def _build(key: str) -> PreTrainedTokenizerFast:
    world = get_world(json.loads(key))
    vocab = {tok: i for i, tok in enumerate(world.vocab)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {SEP} $B:1 {EOS}:1",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS]), (SEP, vocab[SEP])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        sep_token=SEP, model_max_length=512, padding_side="right",
    )
    assert (fast.pad_token_id, fast.bos_token_id, fast.eos_token_id) == (0, 1, 2)
    return fast


def build_tokenizer(world_cfg: dict[str, Any] | None = None) -> PreTrainedTokenizerFast:
    """The world's tokenizer (cached by the normalized world config)."""
    return _build(json.dumps(normalize_world(world_cfg or {}), sort_keys=True))
