"""Running one trial's stages: inside each Ray Train worker (`train_worker`), or in this
process (`run_local`, for tests and benchmarks): the same code either way.

All of a trial's stages run in ONE Train job, because starting a Train job costs far more than a
stage of a tiny model (see the README's performance section). `TrialRunner` is the trial's
context (ranks, stage store, tokenizer, data, spend so far, metrics writer); what each stage kind
does is in `raysweep.run.stages`. Every number lands in the metrics table from rank 0. Every
training stage checkpoints every `checkpoint_every` steps, and a restarted trial resumes from
the latest checkpoint inside its stage (`raysweep.run.resume`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from raysweep.model.parallelize import device_mesh
from raysweep.model.args import LlamaArgs, ParallelConfig, tiny_args
from raysweep.model.checkpoint import save_stage
from raysweep.model.load import build_task_model
from raysweep.model.task_model import TaskModel
from raysweep.plan.build import TrialPlan
from raysweep.plan.stages import TrainingConfig
from raysweep.results.tables import DONE, MetricsWriter, attempts, write_trial
from raysweep.results.rows import trial_row
from raysweep.run.failures import stage_failures
from raysweep.run.resume import Checkpoints
from raysweep.run.stages import STAGES, _mean
from raysweep.run.store import StageStore, stage_root
from raysweep.spec import WARMUP_FRAC
from raysweep.tasks import DataContext, Split, get_task
from raysweep.tasks.encoding import encoder_for
from raysweep.tasks.metrics import METRICS, primary
from raysweep.train.evaluate import evaluate
from raysweep.train.loop import Optim, StepLog
from raysweep.train.ranks import Ranks

# report(metrics, checkpoint=None): a Tune report; `checkpoint`, a local directory to keep as the
# trial's latest checkpoint (raysweep.run.resume). latest_checkpoint(): that directory, or None.
Report = Callable[..., None]
Latest = Callable[[], Path | None]


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
    """`storage`: the sweep's --storage (a path or URI); `stages`: its --stages, where the stage
    store lives (default `<storage>/stages`); `sweep_dir`: the result tables (a path or URI).
    `report(metrics, checkpoint=None)` and `latest_checkpoint()` are the trial's link to Ray
    (`ray_io`), whoever runs it: a Train worker or the Tune trial's own process. Nothing else here
    calls Ray."""

    def __init__(self, plan: TrialPlan, storage: str | Path, sweep_dir: str | Path,
                 trial_id: str, report: Report | None = None, node_id: str | None = None,
                 stages: str | Path | None = None, latest_checkpoint: Latest | None = None):
        self.plan, self.sweep_dir, self.trial_id = plan, sweep_dir, trial_id
        self.store = StageStore(stage_root(storage, stages))
        self.ranks = Ranks.current()
        self.mesh = device_mesh()
        self.report = report or (lambda metrics, checkpoint=None: None)
        self.tokenizer = tokenizer_for(plan)
        self.ctx = DataContext(data_dir=Path(plan.data_dir) if plan.data_dir else None,
                               world=plan.world, seed=plan.seed)
        self.progress = Progress()
        self.source: Path | str | None = plan.model_spec.get("hf")  # the backbone to start from
        self.writer = MetricsWriter(sweep_dir, trial_id, plan.identity_columns(trial_id),
                                    attempt=max(1, attempts(sweep_dir, trial_id)))
        self.node_id = node_id
        self.config = None
        self.checkpoints = Checkpoints(self, plan.checkpoint_every, latest_checkpoint)
        self.stage_index, self.stage_spend0 = 0, (0, 0.0)  # the stage running, its start spend

    def run(self) -> dict[str, Any]:
        """Every stage of the plan in order; returns (and reports) the trial's summary."""
        start = time.perf_counter()
        first, resumed_spend0 = self.checkpoints.resume_trial()  # (0, None) without a checkpoint
        for i, stage in enumerate(self.plan.stages[first:], first):
            begun, spent = time.perf_counter(), (self.progress.tokens, self.progress.flops)
            if i == first and resumed_spend0 is not None:
                spent = resumed_spend0  # (its wall time counts from the restart)
            self.stage_index, self.stage_spend0 = i, spent
            with stage_failures(self, stage):  # reason, stage, step (raysweep.run.failures)
                STAGES[stage.kind](self, stage)
            self.record_spend(stage, time.perf_counter() - begun, *spent)
        # (Not "done": Tune reserves that key and would end the trial before it is recorded.)
        summary = {"objective": self.objective(),
                   "zero_shot": _mean(self.progress.zero_shot.values()), "final": True,
                   "reused": ",".join(self.progress.reused), "node_id": self.node_id,
                   "wall_s": time.perf_counter() - start}
        self.report(summary)
        return summary

    # --- models -------------------------------------------------------------------------------

    def model(self, tasks: list[str], seed: int, stage: TrainingConfig | None = None) -> TaskModel:
        """A TaskModel on the current backbone source with fresh (seeded) heads, wrapped and
        sharded as the stage says (LoRA adapters too); a loaded backbone is built on the meta
        device and read shard by shard (`raysweep.model.load`)."""
        scratch = (tiny_args(self.plan.model_spec["tiny"], len(self.tokenizer))
                   if self.source is None else None)
        lora = getattr(stage, "lora", None)
        if lora and self.source is None:
            raise ValueError(f"stage {stage.kind}: LoRA adapts a loaded backbone; this trial "
                             "starts from scratch (no `hf` model, no earlier stage)")
        model = build_task_model(self.source, tasks, seed, self.mesh,
                                 ParallelConfig.from_stage(stage), lora, scratch)
        self.config = model.config
        return model

    def save(self, model: TaskModel, out: Path, meta: dict[str, Any],
             stage: TrainingConfig | None = None) -> None:
        """Write a stage output, every rank its own shard (a collective: every rank calls with
        the same `out`). A LoRA stage stores its adapters and heads, and names its base."""
        lora = getattr(stage, "lora", None)
        if lora:
            source = Path(self.source) if self.source is not None else None
            sibling = source is not None and source.parent == Path(out).parent
            meta = {**meta, "lora": dict(lora), "base": {
                "source": str(self.source), "stage": source.name if sibling else None}}
        save_stage(Path(out), model, meta, adapters_only=bool(lora))

    def optim(self, stage: TrainingConfig, warmup_frac: float | None) -> Optim:
        # Pretraining's warm-up is not a space setting (and so not part of its key): the
        # space's default for the stages that have one.
        return Optim(lr=stage.lr, steps=stage.steps,
                     warmup_frac=WARMUP_FRAC if warmup_frac is None else warmup_frac)

    # --- data ---------------------------------------------------------------------------------

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

    def score_split(self, model: TaskModel, name: str, split: Split, step: int | None) -> float:
        """Evaluate one split, write its metric rows, return the task's primary score."""
        task = get_task(name)
        ev, target = self.plan.stage("eval"), self.plan.stage("target")
        preds = evaluate(model, name, encoder_for(task), split, self.tokenizer, ev.batch_size,
                         target.max_length)
        values = METRICS[task.metric](split, preds)
        score = primary(task.metric, values)
        for metric, value in {**values, "score": score}.items():
            self.row(stage="eval", task=name, language=split.language, split=split.split,
                     metric=metric, value=value, step=step)
        return score

    # --- spend and rows -----------------------------------------------------------------------

    def spent(self, logs: list[StepLog], stage: TrainingConfig, tokens0: int | None = None,
              flops0: float | None = None) -> tuple[int, float]:
        tokens0 = self.progress.tokens if tokens0 is None else tokens0
        flops0 = self.progress.flops if flops0 is None else flops0
        new = logs[-1].tokens if logs else 0
        fpt = LlamaArgs.from_hf_config(self.config).flops_per_token(stage.max_length)
        return tokens0 + new, flops0 + new * fpt

    def objective(self) -> float | None:
        """What Tune selects on: the mean English dev score over the target tasks so far."""
        return _mean(self.progress.dev.values())

    def train_rows(self, stage: str, task: str, c: TrainingConfig,
                   spend0: tuple[int, float] | None = None):
        """`on_log` for a training run: one loss row per log, its tokens and flops counted
        from `spend0` (default: the spend so far), the spend when the stage or task began."""
        tokens0, flops0 = spend0 or (self.progress.tokens, self.progress.flops)
        fpt = (LlamaArgs.from_hf_config(self.config).flops_per_token(c.max_length)
               if self.config else 0.0)

        def on_log(log: StepLog) -> None:
            name = log.task if task == "all" else task
            langs = get_task(name).train_languages
            self.row(stage=stage, task=name, language=langs[0] if len(langs) == 1 else "all",
                     split="train", metric="loss", value=log.loss, step=log.step,
                     tokens=tokens0 + log.tokens, flops=flops0 + log.tokens * fpt,
                     wall_s=log.wall_s)

        return on_log

    def record_spend(self, stage, wall_s: float, tokens0: int, flops0: float) -> None:
        """The stage's spend, as `split="spend"` rows: its own training `tokens` and `flops`
        (for a stage loaded from the store, what it cost when trained: what reuse saved) and
        `reused` (1 or 0), each with the stage's wall seconds and device-seconds (wall x the
        trial's ranks' GPUs, or its CPU ranks) in the `wall_s` and `device_s` columns. The target
        stage's time includes its evaluations; the eval stage trains nothing."""
        devices = self.ranks.world * (self.plan.gpus_per_worker or 1)
        reused = stage.stored and stage.kind in self.progress.reused
        for metric, value in (("tokens", self.progress.tokens - tokens0),
                              ("flops", self.progress.flops - flops0), ("reused", reused)):
            self.row(stage=stage.kind, task="all", language="all", split="spend", metric=metric,
                     value=float(value), step=None, wall_s=wall_s, device_s=wall_s * devices)
        self.flush(f"spend-{stage.kind}")

    def row(self, **row: Any) -> None:
        if self.ranks.rank == 0:
            row.setdefault("tokens", self.progress.tokens)
            row.setdefault("flops", self.progress.flops)
            self.writer.add(**row)

    def flush(self, label: str) -> None:
        if self.ranks.rank == 0:
            self.writer.flush(label)


def train_worker(config: dict[str, Any]) -> None:
    """The Ray Train `train_loop_per_worker`: one trial's stages on this rank. The trial's row
    is written by the driver (`raysweep.run.record`) from the summary reported here."""
    import ray
    import ray.train

    torch.set_num_threads(int(config["threads"]))
    plan = TrialPlan.from_dict(config["plan"])
    report, latest = ray_io(ray.train)
    TrialRunner(plan, config["storage"], config["sweep_dir"], config["trial_id"],
                report=report, node_id=ray.get_runtime_context().get_node_id(),
                stages=config.get("stages"), latest_checkpoint=latest).run()


def ray_io(api) -> tuple[Report, Latest]:
    """`TrialRunner`'s `report` and `latest_checkpoint` over `ray.train` (in a Train worker) or
    `ray.tune` (a trial run in the Tune trial's own process). A checkpoint directory's name is
    its name in the run's storage (deterministic: `raysweep.run.resume.checkpoint_name`)."""
    import ray.tune

    def report(metrics: dict[str, Any], checkpoint: Path | None = None) -> None:
        if checkpoint is None:
            api.report(metrics)
        elif api is ray.tune:  # (Tune names checkpoint directories itself)
            api.report(metrics, checkpoint=api.Checkpoint.from_directory(str(checkpoint)))
        else:
            api.report(metrics, checkpoint=api.Checkpoint.from_directory(str(checkpoint)),
                       checkpoint_dir_name=Path(checkpoint).name)

    def latest() -> Path | None:
        got = api.get_checkpoint()
        if got is None:
            return None
        import pyarrow.fs

        if isinstance(got.filesystem, pyarrow.fs.LocalFileSystem):
            return Path(got.path)  # read in place
        return Path(got.to_directory())  # a URI storage: a local copy

    return report, latest


def run_local(plan: TrialPlan, storage: str | Path, sweep_dir: str | Path,
              trial_id: str, stages: str | Path | None = None) -> dict[str, Any]:
    """One trial in this process (one rank, no Ray): the runner a sweep's Train workers run,
    for tests and benchmarks. Writes the trial's row as the sweep would."""
    summary = TrialRunner(plan, storage, sweep_dir, trial_id, stages=stages).run()
    write_trial(sweep_dir, trial_row(plan, trial_id, DONE, summary, None, summary["wall_s"]))
    return summary
