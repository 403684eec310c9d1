"""Single-process transfer experiments on the synthetic world, with the engine's own loops
(`raysweep.train.loop`): pretrain -> [intermediate] -> fine-tune on an English target -> zero-shot
eval in every language. Used by bench/transfer.py, tests/test_world.py and the design notes.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from raysweep.data.tokenizer import build_tokenizer
from raysweep.data.world import get_world, normalize_world
from raysweep.model.task_model import TINY_CONFIGS, TaskModel, count_params, init_backbone, tiny_config
from raysweep.tasks.base import DataContext, Split
from raysweep.tasks.heads import head_for
from raysweep.tasks.metrics import METRICS, primary
from raysweep.tasks.registry import get_task
from raysweep.train.loop import FeatureStream, Optim, Ranks, evaluate, train

# Recommended per-stage settings for the tiny sizes (measured; see DESIGN.md).
PRETRAIN = dict(lr=3e-3, batch_size=32, max_length=48)
INTERMEDIATE = dict(steps=150, lr=1e-3, batch_size=32, max_length=48)
TARGET = dict(steps=300, lr=1e-3, batch_size=32, max_length=48)


@dataclass
class Result:
    size: str
    n_params: int
    scores: dict[str, float]  # language -> primary score on test
    times: dict[str, float] = field(default_factory=dict)

    @property
    def zero_shot(self) -> float:
        others = [v for k, v in self.scores.items() if k != "en"]
        return sum(others) / len(others)


def _ctx(world: dict[str, Any]) -> DataContext:
    return DataContext(world=normalize_world(world))


def pretrain(size: str, world: dict[str, Any] | None = None, seed: int = 0,
             steps: int | None = None, lr: float | None = None,
             batch_size: int | None = None, max_length: int | None = None,
             corpus: str = "syn_corpus") -> TaskModel:
    world = world or {}
    tok = build_tokenizer(world)
    config = tiny_config(size, len(tok))
    model = TaskModel(init_backbone(config, seed))
    task = get_task(corpus)
    model.add_head(task)
    ctx = _ctx(world)
    codes = get_world(world).codes
    exs = tuple(ex for lang in codes for ex in task.load("train", lang, ctx).examples)
    split = Split(corpus, "train", "all", exs)
    head = head_for(task)
    feats = head.encode(split, tok, max_length or PRETRAIN["max_length"])
    steps = steps if steps is not None else TINY_CONFIGS[size]["pretrain_steps"]
    stream = FeatureStream(feats, batch_size or PRETRAIN["batch_size"], seed, Ranks())
    train(model, {corpus: stream}, {corpus: head}, Optim(lr=lr or PRETRAIN["lr"], steps=steps),
          tok.pad_token_id, seed, log_every=max(1, steps))
    del model.heads[corpus]
    return model


def train_tasks(model: TaskModel, mixture: dict[str, float], world: dict[str, Any] | None,
                seed: int, steps: int, lr: float, batch_size: int = 32, max_length: int = 48,
                languages: dict[str, tuple[str, ...]] | None = None) -> TaskModel:
    """Multi-task training on the train splits of `mixture` (English unless `languages`
    names others for a task); heads are added and then dropped (the backbone carries on)."""
    world = world or {}
    tok = build_tokenizer(world)
    ctx = _ctx(world)
    streams, heads = {}, {}
    for i, name in enumerate(mixture):
        task = get_task(name)
        langs = (languages or {}).get(name, ("en",))
        exs = tuple(ex for lang in langs for ex in task.load("train", lang, ctx).examples)
        split = Split(name, "train", "+".join(langs), exs)
        if name not in model.heads:
            model.add_head(task)
        heads[name] = head_for(task)
        streams[name] = FeatureStream(heads[name].encode(split, tok, max_length), batch_size,
                                      seed + i, Ranks())
    train(model, streams, heads, Optim(lr=lr, steps=steps), tok.pad_token_id, seed,
          weights=dict(mixture), log_every=max(1, steps))
    return model


def evaluate_task(model: TaskModel, name: str, world: dict[str, Any] | None = None,
                  split: str = "test", languages: tuple[str, ...] | None = None,
                  max_length: int = 48, limit: int | None = None) -> dict[str, float]:
    world = world or {}
    tok = build_tokenizer(world)
    ctx = _ctx(world)
    task = get_task(name)
    out = {}
    for lang in languages or task.languages:
        s = task.load(split, lang, ctx)
        if limit is not None:
            s = Split(s.task, s.split, s.language, s.examples[:limit], s.candidates)
        preds = evaluate(model, name, head_for(task), s, tok, 128, max_length)
        out[lang] = primary(task.metric, METRICS[task.metric](s, preds))
    return out


def transfer_run(size: str, world: dict[str, Any] | None = None, seed: int = 0,
                 target: str = "syn_xnli", mixture: dict[str, float] | None = None,
                 pretrained: TaskModel | None = None, pretrain_steps: int | None = None,
                 inter: dict[str, Any] | None = None, tgt: dict[str, Any] | None = None,
                 limit: int | None = None, inter_languages=None) -> Result:
    """pretrain (or copy `pretrained`) -> intermediate mixture -> target -> zero-shot eval."""
    torch.manual_seed(seed)
    times = {}
    t = time.perf_counter()
    if pretrained is None:
        model = pretrain(size, world, seed, steps=pretrain_steps)
    else:
        model = copy.deepcopy(pretrained)
    times["pretrain"] = time.perf_counter() - t
    inter = {**INTERMEDIATE, **(inter or {})}
    tgt = {**TARGET, **(tgt or {})}
    if mixture:
        t = time.perf_counter()
        train_tasks(model, mixture, world, seed, inter["steps"], inter["lr"],
                    inter["batch_size"], inter["max_length"], inter_languages)
        for name in mixture:
            del model.heads[name]
        times["intermediate"] = time.perf_counter() - t
    t = time.perf_counter()
    train_tasks(model, {target: 1.0}, world, seed + 1000, tgt["steps"], tgt["lr"],
                tgt["batch_size"], tgt["max_length"])
    times["target"] = time.perf_counter() - t
    t = time.perf_counter()
    scores = evaluate_task(model, target, world, limit=limit, max_length=tgt["max_length"])
    times["eval"] = time.perf_counter() - t
    return Result(size, count_params(model.config), scores, times)
