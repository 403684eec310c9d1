"""Running a trial's stages: the code inside each Ray Train worker (or a plain process).

All of a trial's stages run in ONE Train job, because starting a Train job costs far more than a
stage of a tiny model (see the README's performance section). Per stage:

- pretrain / intermediate: stored stages. Rank 0 claims the key in the stage store; if it is
  done (or another trial finishes it while we wait) every rank loads it, else every rank trains
  and rank 0 writes the output and marks it done.
- target: for each target task, fine-tune a fresh head on the task's English training source,
  evaluating on English dev as it goes (these are the reports Tune sees: `objective`).
- eval: zero-shot on every language of each target task; rows per language, per task and the
  XTREME-R aggregates.

Every number lands in the metrics table from rank 0.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from raysweep.model.task_model import (TaskModel, init_backbone, load_backbone, save_checkpoint,
                             tiny_config, train_flops_per_token)
from raysweep.model.parallelize import device_mesh, parallelize
from raysweep.plan.build import Stage, TrialPlan
from raysweep.results.tables import MetricsWriter, write_trial
from raysweep.run.store import StageStore
from raysweep.tasks import DataContext, Split, get_task
from raysweep.tasks.heads import head_for
from raysweep.tasks.metrics import METRICS, primary, xtreme_r_aggregate
from raysweep.train.loop import FeatureStream, Optim, Ranks, StepLog, Trainer, evaluate, train

Report = Callable[[dict[str, Any]], None]


def tokenizer_for(plan: TrialPlan):
    spec = plan.model_spec
    if spec.get("tiny"):
        from raysweep.data import build_tokenizer

        return build_tokenizer(plan.world)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["hf"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


@dataclass
class Progress:
    """What the trial has spent so far, carried from stage to stage (and through the store)."""

    tokens: int = 0
    flops: float = 0.0
    reused: list[str] = field(default_factory=list)
    dev: dict[str, float] = field(default_factory=dict)  # target task -> English dev score
    zero_shot: dict[str, float] = field(default_factory=dict)  # target task -> mean non-en
    test: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> lang -> score


class TrialRunner:
    def __init__(self, plan: TrialPlan, storage: str | Path, sweep_dir: str | Path,
                 trial_id: str, report: Report | None = None):
        self.plan, self.sweep_dir, self.trial_id = plan, Path(sweep_dir), trial_id
        self.store = StageStore(Path(storage) / "stages")
        self.ranks = Ranks.current()
        self.mesh = device_mesh()
        self.report = report or (lambda metrics: None)
        self.tokenizer = tokenizer_for(plan)
        self.ctx = DataContext(data_dir=Path(plan.data_dir) if plan.data_dir else None,
                               world=plan.world, seed=int(plan.params.get("seed", 0)))
        self.progress = Progress()
        self.source: Path | str | None = plan.model_spec.get("hf")  # the backbone to start from
        self.writer = MetricsWriter(sweep_dir, trial_id, {
            "sweep": plan.sweep, "trial_id": trial_id, "model": plan.model,
            "n_params": plan.n_params, **plan.hparam_columns()})
        self.config = None

    # --- building models ---------------------------------------------------------------------

    def model(self, tasks: list[str], seed: int) -> TaskModel:
        """A TaskModel on the current backbone source with fresh (seeded) heads, sharded."""
        torch.manual_seed(seed)
        if self.source is None:  # from scratch (tiny): the pretrain stage starts here
            backbone = init_backbone(tiny_config(self.plan.model_spec["tiny"],
                                                 len(self.tokenizer)), seed)
        else:
            backbone = load_backbone(self.source)
        model = TaskModel(backbone)
        torch.manual_seed(seed + 1)
        for name in tasks:
            model.add_head(get_task(name))
        self.config = model.config
        return parallelize(model, self.mesh)

    def save(self, model: TaskModel, out: Path | None, meta: dict[str, Any]) -> None:
        """Gather the full state dict (a collective: every rank calls) and write it on rank 0."""
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                     cpu_offload=True))
        if out is not None:
            backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
            heads = {k: v for k, v in state.items() if k.startswith("heads.")}
            save_checkpoint(out, backbone, heads, model.config, meta)

    # --- stages -------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        start = time.perf_counter()
        for stage in self.plan.stages:
            if stage.name in ("pretrain", "intermediate"):
                self.stored_stage(stage)
            elif stage.name == "target":
                self.target_and_eval(stage, self.plan.stage("eval"))
                self.aggregate_rows()
                self.flush("aggregate")
        objective = _mean(self.progress.dev.values())
        zero_shot = _mean(self.progress.zero_shot.values())
        # (Not "done": Tune reserves that key and would end the trial before it writes its row.)
        summary = {"objective": objective, "zero_shot": zero_shot, "final": True,
                   "reused": ",".join(self.progress.reused), "wall_s": time.perf_counter() - start}
        self.report(summary)
        if self.ranks.rank == 0:
            # The trial's row comes from rank 0: Train V2 hands the Tune trial no metrics from
            # a run without checkpoints, so the trial function could not write it.
            from raysweep.run.trial import trial_row

            write_trial(self.sweep_dir, trial_row(self.plan, self.trial_id, "done", summary, None,
                                                  summary["wall_s"]))
        return summary

    def stored_stage(self, stage: Stage) -> None:
        out = self.store.path(stage.name, stage.key)
        if self.ranks.rank == 0:
            with self.store.claim(stage.name, stage.key) as todo:
                trained = self.ranks.broadcast(todo is not None)
                if trained:
                    self.train_stage(stage, todo)
        else:
            trained = self.ranks.broadcast(None)
            if trained:
                self.train_stage(stage, None)
        self.ranks.barrier()  # rank 0 has marked the output done
        meta = json.loads((out / "meta.json").read_text())
        if not trained:
            self.progress.reused.append(stage.name)
        self.progress.tokens, self.progress.flops = meta["tokens"], meta["flops"]
        self.source = out

    def train_stage(self, stage: Stage, out: Path | None) -> None:
        c = stage.config
        if stage.name == "pretrain":
            weights, sampler = {c["corpus"]: 1.0}, "proportional"
        else:
            weights, sampler = c["mixture"], c["sampler"]
        data = {t: self.train_data(t) for t in weights}
        model = self.model(list(data), c["seed"])
        streams = {t: FeatureStream(head_for(get_task(t)).encode(s, self.tokenizer, c["max_length"]),
                                    c["batch_size"], c["seed"] + i, self.ranks)
                   for i, (t, s) in enumerate(data.items())}
        logs = train(model, streams, {t: head_for(get_task(t)) for t in data},
                     Optim(lr=c["lr"], steps=c["steps"], warmup_frac=c.get("warmup_frac", 0.1)),
                     self.tokenizer.pad_token_id, c["seed"], sampler=sampler, weights=weights,
                     log_every=c["log_every"], on_log=self.train_rows(stage.name, "all", c))
        tokens, flops = self._spent(logs, c)
        self.save(model, out, {"config": c, "key": stage.key, "tokens": tokens, "flops": flops,
                               "final_loss": logs[-1].loss})
        self.flush(stage.name)

    def target_and_eval(self, target: Stage, ev: Stage) -> None:
        c = target.config
        for i, name in enumerate(c["tasks"]):
            task = get_task(name)
            model = self.model([name], c["seed"] + 1000 * i)
            if task.head != "retrieval":
                self.fine_tune(model, name, c, ev)
            # else: retrieval (Tatoeba, BUCC, LAReQA, Mewsli-X) is zero-shot: the backbone as is
            self.eval_stage(model, name, ev)
            self.flush(f"target-{name}")
            del model

    def fine_tune(self, model: TaskModel, name: str, c: dict[str, Any], ev: Stage) -> None:
        """Train a target task's head on its English training source, scoring English dev
        every `eval_every` steps: those scores are what Tune sees (`objective`)."""
        task = get_task(name)
        head = head_for(task)
        # The English training sources (XCOPA: SIQa then COPA), pooled into one stream.
        sources = task.train_tasks or (task.train_task or name,)
        features = [f for src in sources
                    for f in head.encode(self.train_data(src), self.tokenizer, c["max_length"])]
        stream = FeatureStream(features, c["batch_size"], c["seed"], self.ranks)
        dev = self.english_dev(name, ev.config["max_examples"])
        trainer = Trainer(model, {name: head},
                          Optim(lr=c["lr"], steps=c["steps"], warmup_frac=c["warmup_frac"]),
                          self.tokenizer.pad_token_id, c["seed"])
        tokens0, flops0 = self.progress.tokens, self.progress.flops
        on_log = self.train_rows("target", name, c)
        for chunk in _chunks(c["steps"], c["eval_every"]):
            logs = trainer.run({name: stream}, chunk, c["log_every"], on_log)
            self.progress.tokens, self.progress.flops = self._spent(logs, c, tokens0, flops0)
            if dev is not None:
                self.progress.dev[name] = self.score_split(model, name, dev, trainer.step)
                self.report({"objective": _mean(self.progress.dev.values()), "task": name,
                             "step": trainer.step, "stage": "target"})

    def english_dev(self, name: str, limit: int | None) -> Split | None:
        """The split that selects models (XTREME's protocol): the target's English dev, else its
        training source's (XQuAD, MLQA: SQuAD dev)."""
        task = get_task(name)
        for candidate in (task, get_task(task.train_task or name)):
            if "en" in candidate.languages and "validation" in candidate.splits:
                split = self.load(candidate.name, "validation", "en", limit)
                return Split(name, split.split, split.language, split.examples, split.candidates)
        return None

    def eval_stage(self, model: TaskModel, name: str, ev: Stage) -> None:
        scores = {}
        for lang in ev.config["languages"][name]:
            split = self.load(name, "test", lang, ev.config["max_examples"])
            scores[lang] = self.score_split(model, name, split, None)
        self.progress.test[name] = scores
        others = [v for k, v in scores.items() if k != "en"]
        if others:
            self.progress.zero_shot[name] = _mean(others)
            self.row(stage="eval", task=name, language="all", split="test", metric="score",
                     value=self.progress.zero_shot[name], step=None)

    def score_split(self, model: TaskModel, name: str, split: Split, step: int | None) -> float:
        """Evaluate one split, write its metric rows, return the task's primary score."""
        task = get_task(name)
        preds = evaluate(model, name, head_for(task), split, self.tokenizer,
                         self.plan_eval_batch(), self.max_length())
        values = METRICS[task.metric](split, preds)
        score = primary(task.metric, values)
        for metric, value in {**values, "score": score}.items():
            self.row(stage="eval", task=name, language=split.language, split=split.split,
                     metric=metric, value=value, step=step)
        return score

    def aggregate_rows(self) -> None:
        """XTREME-R's aggregates over the target tasks (each task: its mean over all its
        evaluated languages, English included, as XTREME-R reports)."""
        for agg, value in xtreme_r_aggregate(self.progress.test).items():
            self.row(stage="eval", task=agg, language="all", split="test", metric="score",
                     value=value, step=None)

    # --- helpers --------------------------------------------------------------------------------

    def plan_eval_batch(self) -> int:
        return self.plan.stage("eval").config["batch_size"]

    def max_length(self) -> int:
        return self.plan.stage("target").config["max_length"]

    def load(self, task: str, split: str, lang: str, limit: int | None = None) -> Split:
        s = get_task(task).load(split, lang, self.ctx)
        if limit is not None and len(s) > limit:
            s = Split(s.task, s.split, s.language, s.examples[:limit], s.candidates)
        return s

    def train_data(self, task: str) -> Split:
        """A task's training split over its train languages: English for the zero-shot
        protocol, every language for corpora, translate-train and multilingual LM tasks."""
        t = get_task(task)
        if t.train_languages == ("en",):
            return self.load(task, "train", "en")
        examples = tuple(ex for lang in t.train_languages
                         for ex in self.load(task, "train", lang).examples)
        return Split(task, "train", "all", examples)

    def _spent(self, logs: list[StepLog], c: dict[str, Any], tokens0: int | None = None,
               flops0: float | None = None) -> tuple[int, float]:
        tokens0 = self.progress.tokens if tokens0 is None else tokens0
        flops0 = self.progress.flops if flops0 is None else flops0
        new = logs[-1].tokens if logs else 0
        return tokens0 + new, flops0 + new * train_flops_per_token(self.config, c["max_length"])

    def train_rows(self, stage: str, task: str, c: dict[str, Any]):
        tokens0, flops0 = self.progress.tokens, self.progress.flops
        fpt = train_flops_per_token(self.config, c["max_length"]) if self.config else 0.0

        def on_log(log: StepLog) -> None:
            name = log.task if task == "all" else task
            langs = get_task(name).train_languages
            self.row(stage=stage, task=name, language=langs[0] if len(langs) == 1 else "all",
                     split="train",
                     metric="loss", value=log.loss, step=log.step,
                     tokens=tokens0 + log.tokens, flops=flops0 + log.tokens * fpt,
                     wall_s=log.wall_s)

        return on_log

    def row(self, **row: Any) -> None:
        if self.ranks.rank == 0:
            row.setdefault("tokens", self.progress.tokens)
            row.setdefault("flops", self.progress.flops)
            self.writer.add(**row)

    def flush(self, label: str) -> None:
        if self.ranks.rank == 0:
            self.writer.flush(label)


def _chunks(total: int, every: int) -> list[int]:
    out = [every] * (total // every)
    if total % every:
        out.append(total % every)
    return out


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train `train_loop_per_worker`: one trial's stages on this rank."""
    import ray.train

    torch.set_num_threads(int(config["threads"]))
    plan = TrialPlan.from_dict(config["plan"])
    runner = TrialRunner(plan, config["storage"], config["sweep_dir"], config["trial_id"],
                         report=lambda metrics: ray.train.report(metrics))
    runner.run()
