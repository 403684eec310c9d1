"""A small synthetic sweep with known laws, written through the real writer
(`raysweep.results.tables`).

The layout and conventions are those of a real sweep: zero-shot test rows per (task, language)
with the task's metrics and a `score`, per-task means over non-English languages
(language="all"), XTREME-R aggregates, English dev rows (split="validation") that select the best
learning rate, and pretrain / target training losses. Every number follows a known law plus
seeded noise, so tests can check what the analysis recovers:

- error at the optimal lr (English, no intermediate training): E_t + A_t * N^-alpha_t;
- a quadratic penalty in log lr around lr*(N) = LR_C * N^-LR_GAMMA;
- a language gap, and an intermediate-training gain per (mixture, task) that shrinks with N and,
  for multilingual mixtures, grows for languages far from English.

`write_sweep(path)` writes it, with the space.json a launch records (the normalized
`SweepSpec`, which says which learning rate is swept), and returns the `SweepTruth`. Also
importable as a script: `python tests/sweep_fixture.py DIR` writes one for manual runs of
`raysweep fit` or the notebook.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from raysweep.results.best import SPACE_FILE
from raysweep.results.tables import MetricsWriter, write_trial
from raysweep.spec.names import NO_MIXTURE
from raysweep.spec.space import SweepSpec

SIZES = {"tiny": 10_000_000, "small": 30_000_000, "base": 100_000_000,
         "large": 300_000_000, "xl": 1_000_000_000}
LRS = (1e-5, 3e-5, 1e-4)  # lr_target, the swept learning rate
MIXTURES = {NO_MIXTURE: "none", "mnli": "english", "squad": "english", "xnli-mt": "multilingual"}
MIXTURE_TASKS = {"mnli": "mnli", "squad": "squad", "xnli-mt": "xnli"}  # intermediate tasks
LR_INTERMEDIATE = 2e-5  # one value: not swept
LANGUAGES = ("en", "de", "zh", "sw")
SEEDS = (0, 1)
NON_ENGLISH = tuple(lang for lang in LANGUAGES if lang != "en")

# task -> (category, metrics, (E, A, alpha) of the English error at the optimal lr)
TASKS = {
    "xnli": ("classification", ("accuracy",), (0.15, 60.0, 0.30)),
    "pawsx": ("classification", ("accuracy",), (0.10, 25.0, 0.28)),
    "xquad": ("qa", ("em", "f1"), (0.20, 120.0, 0.33)),
}
CHANCE = {"xnli": 1 / 3, "pawsx": 0.5, "xquad": 0.0}
LANGUAGE_GAP = {"en": 0.0, "de": 0.05, "zh": 0.08, "sw": 0.15}
# Extra gain from a multilingual intermediate mixture on languages far from English.
MULTILINGUAL_BOOST = {"en": 0.0, "de": 0.005, "zh": 0.01, "sw": 0.02}
BASE_GAIN = {  # mixture -> task -> gain at N = 1e8
    NO_MIXTURE: {"xnli": 0.0, "pawsx": 0.0, "xquad": 0.0},
    "mnli": {"xnli": 0.03, "pawsx": 0.02, "xquad": -0.005},
    "squad": {"xnli": 0.0, "pawsx": 0.005, "xquad": 0.04},
    "xnli-mt": {"xnli": 0.04, "pawsx": 0.015, "xquad": 0.01},
}
GAIN_SIZE_EXPONENT = 0.1  # gains shrink as (1e8 / N)^0.1
# lr*(N) = 3.2e-5 at N = 1e8, from 5e-5 at 1e7 to 2e-5 at 1e9: inside the lr grid at every size,
# so each size's optimum is interpolated between grid points, not stuck at an edge.
LR_C, LR_GAMMA = 3.16e-5 * 1e8**0.2, 0.2
LR_PENALTY = 0.04  # score lost per (log lr - log lr*)^2
NOISE = 0.004  # on each (trial, task, language) score
MEAN_NOISE = NOISE / np.sqrt(len(NON_ENGLISH))  # on a trial's language="all" score
INTERMEDIATE_TOKENS = 50_000_000
TARGET_TOKENS = 10_000_000


@dataclass(frozen=True)
class SweepTruth:
    sweep_dir: Path
    sizes: dict[str, int]
    lr_c: float
    lr_gamma: float
    task_laws: dict[str, tuple[float, float, float]]

    def lr_opt(self, n: float) -> float:
        return self.lr_c * n**-self.lr_gamma


def gain(mixture: str, task: str, language: str, n: float) -> float:
    boost = MULTILINGUAL_BOOST[language] if MIXTURES[mixture] == "multilingual" else 0.0
    return (BASE_GAIN[mixture][task] + boost) * (1e8 / n) ** GAIN_SIZE_EXPONENT


def clean_score(task: str, language: str, n: float, lr: float, mixture: str) -> float:
    e, a, alpha = TASKS[task][2]
    penalty = LR_PENALTY * (np.log(lr) - np.log(LR_C * n**-LR_GAMMA)) ** 2
    return 1 - (e + a * n**-alpha) - penalty - LANGUAGE_GAP[language] + gain(mixture, task,
                                                                              language, n)


def clean_mean_score(task: str, n: float, lr: float, mixture: str = NO_MIXTURE) -> float:
    """The noise-free language="all" test score: the mean over non-English languages."""
    return float(np.mean([clean_score(task, lang, n, lr, mixture) for lang in NON_ENGLISH]))


def clean_best_lr(task: str, n: float, mixture: str = NO_MIXTURE) -> float:
    """The grid lr the English dev score picks without noise."""
    return max(LRS, key=lambda lr: clean_score(task, "en", n, lr, mixture))


def expected_gain(mixture: str, task: str, n: float) -> float:
    """The noise-free language="all" gain of `mixture` over no intermediate training (the
    penalty for an off-grid lr cancels: the gain does not depend on the lr)."""
    return float(np.mean([gain(mixture, task, lang, n) for lang in NON_ENGLISH]))


def _task_metrics(task: str, score: float) -> dict[str, float]:
    metrics = TASKS[task][1]
    if metrics == ("em", "f1"):  # the QA score is (EM + F1) / 2
        return {"em": score - 0.05, "f1": score + 0.05, "score": score}
    return {metrics[0]: score, "score": score}


def _write_trial(sweep_dir: Path, sweep: str, model: str, n: int, lr: float, mixture: str,
                 seed: int, rng: np.random.Generator, status: str = "done") -> None:
    trial_id = f"{model}-{mixture}-lr{lr:.0e}-s{seed}"
    hparams = dict(lr_pretrain=3e-4,
                   lr_intermediate=None if mixture == NO_MIXTURE else LR_INTERMEDIATE,
                   lr_target=lr, mixture=mixture, mixture_kind=MIXTURES[mixture], seed=seed)
    writer = MetricsWriter(sweep_dir, trial_id, dict(sweep=sweep, trial_id=trial_id,
                                                     model=model, n_params=n, **hparams))
    pretrain_tokens = 20 * n
    tokens = pretrain_tokens + (0 if mixture == NO_MIXTURE else INTERMEDIATE_TOKENS) + TARGET_TOKENS
    flops = 6.0 * n * tokens

    # Pretraining is shared by every trial of a model: the same curve, Chinchilla-like.
    for step, frac in ((1, 0.25), (2, 0.5), (3, 1.0)):
        d = frac * pretrain_tokens
        loss = 1.7 + 400 * n**-0.34 + 410 * d**-0.28
        writer.add(stage="pretrain", task="pretrain", language="en", split="train",
                   metric="loss", value=loss, step=step * 1000, tokens=int(d),
                   flops=6.0 * n * d, wall_s=10.0 * step)

    test_scores: dict[tuple[str, str], float] = {}
    dev_scores: dict[str, float] = {}
    for task, (_, _, (e, a, alpha)) in TASKS.items():
        base = clean_score(task, "en", n, lr, mixture)
        # The target task's English training loss falls as the model gets better at it.
        for step, frac in ((50, 1.3), (100, 1.0)):
            loss = frac * (0.3 + 2.5 * (1 - base)) * np.exp(rng.normal(0, 0.01))
            writer.add(stage="target", task=task, language="en", split="train", metric="loss",
                       value=loss, step=step, tokens=tokens, flops=flops, wall_s=float(step))
        dev = base + rng.normal(0, NOISE)
        dev_scores[task] = dev
        for name, value in _task_metrics(task, dev).items():
            writer.add(stage="eval", task=task, language="en", split="validation", metric=name,
                       value=value, step=100, tokens=tokens, flops=flops, wall_s=1.0)
        for language in LANGUAGES:
            score = clean_score(task, language, n, lr, mixture) + rng.normal(0, NOISE)
            test_scores[task, language] = score
            for name, value in _task_metrics(task, score).items():
                writer.add(stage="eval", task=task, language=language, split="test",
                           metric=name, value=value, step=100, tokens=tokens, flops=flops,
                           wall_s=1.0)

    def add_aggregate(task: str, score: float, metrics: dict[str, float] | None = None):
        for name, value in (metrics or {"score": score}).items():
            writer.add(stage="eval", task=task, language="all", split="test", metric=name,
                       value=value, step=100, tokens=tokens, flops=flops, wall_s=1.0)

    task_all = {t: float(np.mean([test_scores[t, lang] for lang in NON_ENGLISH])) for t in TASKS}
    for task, score in task_all.items():
        add_aggregate(task, score, _task_metrics(task, score))
    add_aggregate("xtreme_r", float(np.mean(list(task_all.values()))))
    for category in sorted({c for c, _, _ in TASKS.values()}):
        members = [t for t, (c, _, _) in TASKS.items() if c == category]
        add_aggregate(f"xtreme_r/{category}", float(np.mean([task_all[t] for t in members])))

    if status != "done":  # a crashed attempt leaves rows that the analysis must not use
        writer.rows = [r for r in writer.rows if r["stage"] != "eval" or r["split"] == "test"]
        for row in writer.rows:
            row["value"] = 0.0
    writer.flush("all")
    write_trial(sweep_dir, dict(
        sweep=sweep, trial_id=trial_id, model=model, n_params=n, **hparams, status=status,
        error=None if status == "done" else "RuntimeError: CUDA out of memory",
        objective=float(np.mean(list(dev_scores.values()))), zero_shot=task_all["xnli"],
        stage_keys=json.dumps({}), reused_stages=json.dumps([]),
        config=json.dumps({"model": model, "lr_target": lr, "mixture": mixture, "seed": seed}),
        wall_s=60.0, finished_at=None,
    ))


def space(name: str, sizes: dict[str, int], seeds: tuple[int, ...]) -> SweepSpec:
    """The space this sweep would have been launched from (validated as a launch validates its
    YAML, less the task registry and resource checks: the tasks here are named, not run)."""
    return SweepSpec.model_validate({
        "name": name,
        "models": [{"name": m, "hf": f"synthetic/{m}", "n_params": n} for m, n in sizes.items()],
        "stages": {"intermediate": {"steps": 100}, "target": {"tasks": list(TASKS), "steps": 100}},
        "mixtures": {m: {"tasks": {MIXTURE_TASKS[m]: 1.0} if m in MIXTURE_TASKS else {},
                         "kind": kind} for m, kind in MIXTURES.items()},
        "search": {"params": {"lr_target": {"values": list(LRS)},
                              "lr_intermediate": {"values": [LR_INTERMEDIATE]},
                              "mixture": {"values": list(MIXTURES)},
                              "seed": {"values": list(seeds)}}},
    })


def write_sweep(path: str | Path, *, sizes: dict[str, int] | None = None,
                seeds: tuple[int, ...] = SEEDS, seed: int = 0) -> SweepTruth:
    """Write the synthetic sweep under `path` (the sweep directory) and return its truth."""
    sweep_dir = Path(path)
    sizes = dict(SIZES if sizes is None else sizes)
    rng = np.random.default_rng(seed)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SPACE_FILE).write_text(json.dumps(space(sweep_dir.name, sizes, seeds).normalized,
                                                   indent=1))
    for model, n in sizes.items():
        for lr in LRS:
            for mixture in MIXTURES:
                for trial_seed in seeds:
                    _write_trial(sweep_dir, sweep_dir.name, model, n, lr, mixture, trial_seed,
                                 rng)
    # One crashed trial with a bogus lr: its partial rows must be ignored.
    largest = max(sizes, key=sizes.get)
    _write_trial(sweep_dir, sweep_dir.name, largest, sizes[largest], 3e-3, NO_MIXTURE, seeds[0],
                 rng, status="error")
    return SweepTruth(sweep_dir, sizes, LR_C, LR_GAMMA, {t: law for t, (_, _, law) in
                                                         TASKS.items()})


if __name__ == "__main__":
    truth = write_sweep(sys.argv[1])
    print(f"wrote a synthetic sweep to {truth.sweep_dir}")
