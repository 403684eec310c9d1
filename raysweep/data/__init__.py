"""The synthetic multilingual world (an offline XTREME-R analogue): languages, tokenizer,
pretraining corpus and task data. See `raysweep/data/DESIGN.md`."""

from raysweep.data.tokenizer import build_tokenizer
from raysweep.data.world import DEFAULT_WORLD, World, get_world, normalize_world, world_key

__all__ = ["DEFAULT_WORLD", "World", "build_tokenizer", "get_world", "normalize_world",
           "world_key"]
