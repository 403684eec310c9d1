"""The synthetic multilingual world (an offline XTREME-R analogue): languages, tokenizer,
pretraining corpus and task data. See `raysweep/data/DESIGN.md`."""

from raysweep.data.config import DEFAULT_WORLD, normalize_world, world_key
from raysweep.data.world import World, get_world

__all__ = ["DEFAULT_WORLD", "World", "build_tokenizer", "get_world", "normalize_world",
           "world_key"]


def __getattr__(name: str):
    # The tokenizer pulls in transformers (seconds); the config layer (spec, plan) only needs
    # the world, so it is imported when asked for.
    if name == "build_tokenizer":
        from raysweep.data.tokenizer import build_tokenizer

        return build_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
