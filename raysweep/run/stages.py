"""What each stage kind does inside a trial: one function per kind, looked up in `STAGES`.

- pretrain / intermediate (stored): rank 0 claims the key in the stage store; if the output is
  done (or another trial finishes it while we wait) every rank loads it, else every rank trains
  and rank 0 writes the output and marks it done.
- target: for each target task, fine-tune a fresh head on the task's English training source,
  scoring English dev as it goes (the reports Tune sees: `objective`), then evaluate it zero-shot
  right away with the eval stage's settings: only one fine-tuned model is alive at a time.
- eval: what is left once every target task is evaluated: XTREME-R's aggregates.

Each function takes the trial's `TrialRunner` (the context: ranks, store, tokenizer, data,
metrics writer, spend so far) and the stage's typed config.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from raysweep.model.task_model import TaskModel
from raysweep.plan.stages import EvalConfig, StageConfig, TargetConfig, TrainingConfig
from raysweep.run.store import StageStore
from raysweep.tasks import Split, get_task
from raysweep.tasks.encoding import encoder_for
from raysweep.tasks.metrics import xtreme_r_aggregate
from raysweep.tasks.retrieval import fine_tuned
from raysweep.train.loop import Trainer
from raysweep.train.ranks import Ranks
from raysweep.train.stream import FeatureStream

if TYPE_CHECKING:
    from raysweep.run.runner import TrialRunner


WAITING = "waiting"  # rank 0 to the others: another trial still holds the key's lease


@contextmanager
def claim_together(ranks: Ranks, store: StageStore, kind: str, key: str) -> Iterator[str | None]:
    """The store's claim, made by rank 0 for every rank: all get the same answer, the (private)
    directory to write in (every rank writes its own shard) or None. While rank 0 waits on
    another trial's lease (hours, maybe), it says so to the others at each poll: they wait in
    a broadcast, and a collective's timeout (Train's default: 30 min) must not run out."""
    if ranks.rank == 0:
        keep_alive = (lambda: ranks.broadcast(WAITING)) if ranks.world > 1 else None
        with store.claim(kind, key, on_wait=keep_alive) as todo:
            yield ranks.broadcast(None if todo is None else str(todo))
    else:
        todo = ranks.broadcast(None)
        while todo == WAITING:
            todo = ranks.broadcast(None)
        yield todo


def stored_stage(r: "TrialRunner", stage: TrainingConfig) -> None:
    out = r.store.path(stage.kind, stage.key)
    with claim_together(r.ranks, r.store, stage.kind, stage.key) as todo:
        if todo is not None:
            train_stored(r, stage, Path(todo))
    r.ranks.barrier()  # rank 0 has marked the output done
    if todo is not None:  # the rows of a stage we trained, once its output is surely ours
        r.flush(stage.kind)  # (not when our lease was lost: the new holder's rows count)
    meta = json.loads((out / "meta.json").read_text())
    if todo is None:
        r.progress.reused.append(stage.kind)
    r.progress.tokens, r.progress.flops = meta["tokens"], meta["flops"]
    r.source = out


def train_stored(r: "TrialRunner", stage: TrainingConfig, out: Path) -> None:
    """Train a pretrain or intermediate stage; every rank writes its shard of the output to
    `out` (rank 0 holds the store's lease; the store marks it done once this returns)."""
    if stage.kind == "pretrain":
        weights, sampler, warmup = {stage.corpus: 1.0}, "proportional", None
    else:
        weights, sampler, warmup = stage.mixture, stage.sampler, stage.warmup_frac
    data = {t: r.train_data(t) for t in weights}
    model = r.model(list(data), stage.seed, stage)
    streams = {t: FeatureStream(encoder_for(get_task(t)).encode(s, r.tokenizer, stage.max_length),
                                stage.batch_size, stage.seed + i, r.ranks,
                                stage.micro_batch_size)
               for i, (t, s) in enumerate(data.items())}
    trainer = Trainer(model, {t: encoder_for(get_task(t)) for t in data},
                      r.optim(stage, warmup), r.tokenizer.pad_token_id, stage.seed, sampler,
                      weights, {name: len(s.features) for name, s in streams.items()})
    spend0 = r.checkpoints.resume(0, model, trainer, streams) or r.stage_spend0
    logs = trainer.run(streams, stage.steps - trainer.step, stage.log_every,
                       r.train_rows(stage.kind, "all", stage, spend0),
                       r.checkpoints.hook(stage, 0, model, streams, spend0))
    tokens, flops = r.spent(logs, stage, *spend0)
    r.save(model, out, {"config": stage.key_dict(), "key": stage.key, "tokens": tokens,
                        "flops": flops, "final_loss": logs[-1].loss}, stage)


def target_stage(r: "TrialRunner", stage: TargetConfig) -> None:
    ev = r.plan.stage("eval")
    first = r.checkpoints.resume_task()  # tasks before it: done before a restart
    for i, name in enumerate(stage.tasks):
        if i < first:
            continue
        model = r.model([name], stage.seed + 1000 * i, stage)
        if fine_tuned(get_task(name)):
            fine_tune(r, model, name, stage, ev, i)
        # else: Tatoeba and BUCC are zero-shot in XTREME-R's protocol: the backbone as is
        evaluate_task(r, model, name, ev)
        r.flush(f"target-{name}")
        del model


def fine_tune(r: "TrialRunner", model: TaskModel, name: str, c: TargetConfig,
              ev: EvalConfig, index: int = 0) -> None:
    """Train a target task's head on its English training source, scoring English dev every
    `eval_every` steps: those scores are what Tune sees (`objective`). `index`: the task's place
    in the stage (where a mid-stage checkpoint says it is)."""
    task = get_task(name)
    head = encoder_for(task)
    # The English training sources (XCOPA: SIQa then COPA), pooled into one stream.
    sources = task.train_tasks or (task.train_task or name,)
    features = [f for src in sources
                for f in head.encode(r.train_data(src), r.tokenizer, c.max_length)]
    stream = FeatureStream(features, c.batch_size, c.seed, r.ranks, c.micro_batch_size)
    dev = english_dev(r, name, ev.max_examples)
    trainer = Trainer(model, {name: head}, r.optim(c, c.warmup_frac), r.tokenizer.pad_token_id,
                      c.seed)
    streams = {name: stream}
    spend0 = (r.checkpoints.resume(index, model, trainer, streams)
              or (r.progress.tokens, r.progress.flops))
    on_log = r.train_rows("target", name, c, spend0)
    checkpoint = r.checkpoints.hook(c, index, model, streams, spend0)
    for end in _chunk_ends(c.steps, c.eval_every):
        if end <= trainer.step:  # evaluated before the checkpoint we resumed from
            continue
        logs = trainer.run(streams, end - trainer.step, c.log_every, on_log, checkpoint)
        r.progress.tokens, r.progress.flops = r.spent(logs, c, *spend0)
        if dev is not None:
            r.progress.dev[name] = r.score_split(model, name, dev, trainer.step)
            r.report({"objective": r.objective(), "task": name,
                      "step": trainer.step, "stage": "target"})
        checkpoint(trainer)  # at an evaluation step, after the evaluation (its rows included)


def english_dev(r: "TrialRunner", name: str, limit: int | None) -> Split | None:
    """The split that selects models (XTREME's protocol): the target's English dev, else its
    training source's (XQuAD, MLQA: SQuAD dev)."""
    task = get_task(name)
    for candidate in (task, get_task(task.train_task or name)):
        if "en" in candidate.languages and "validation" in candidate.splits:
            split = r.load(candidate.name, "validation", "en", limit)
            return Split(name, split.split, split.language, split.examples, split.candidates)
    return None


def evaluate_task(r: "TrialRunner", model: TaskModel, name: str, ev: EvalConfig) -> None:
    """Zero-shot test scores in every language of a target task; `all` = non-English mean."""
    scores = {}
    for lang in ev.languages[name]:
        split = r.load(name, "test", lang, ev.max_examples)
        scores[lang] = r.score_split(model, name, split, None)
    r.progress.test[name] = scores
    others = [v for k, v in scores.items() if k != "en"]
    if others:
        r.progress.zero_shot[name] = _mean(others)
        r.row(stage="eval", task=name, language="all", split="test", metric="score",
              value=r.progress.zero_shot[name], step=None)


def aggregate_stage(r: "TrialRunner", stage: EvalConfig) -> None:
    """XTREME-R's aggregates over the target tasks (each task: its mean over all its evaluated
    languages, English included, as XTREME-R reports)."""
    for agg, value in xtreme_r_aggregate(r.progress.test).items():
        r.row(stage="eval", task=agg, language="all", split="test", metric="score",
              value=value, step=None)
    r.flush("aggregate")


STAGES: dict[str, Callable[["TrialRunner", StageConfig], None]] = {
    "pretrain": stored_stage,
    "intermediate": stored_stage,
    "target": target_stage,
    "eval": aggregate_stage,
}


def _chunk_ends(total: int, every: int) -> list[int]:
    """The steps at which a run of `total` steps evaluates: every `every`, and the last."""
    return sorted({*range(every, total + 1, every), total})


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None
