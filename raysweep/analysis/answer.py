"""The study's answer from a sweep's tables (what `raysweep show` prints under the per-trial
tables, and `raysweep show --json` gives tools): does intermediate training help zero-shot
transfer at each size, by how much and how surely, which languages gain and lose most, and does
the gain grow or shrink with size.

Definitions
- A gain cell is `raysweep.analysis.gains.intermediate_gains`: for one size, seed, target task
  and language, the test score of a mixture's best trial minus that of the best trial without
  intermediate training (`none`), each chosen by the task's English dev score
  (`raysweep.results.best`). Only zero-shot cells count: non-English languages of single target
  tasks (not the XTREME-R aggregates, which are means of these).
- The gain on the zero-shot mean, per size and mixture, is the statistic
  `mean over seeds ( mean over tasks ( mean over the task's languages ( cell ) ) )`: the
  trials table's `zero_shot` (the mean over tasks of each task's non-English mean), differenced
  cell by cell. `none` and `mixture` columns are the same statistic of the two scores.
- Its interval is a percentile bootstrap (LEVEL) over seeds and languages: each of RESAMPLES
  draws resamples the seeds and the languages with replacement (the same languages for every
  seed and size), from the fixed SEED, so the same tables always give the same interval.
- The trend, per mixture, is the least-squares slope of the per-size gain on log10(n_params)
  (gain per decade of parameters); its interval comes from the same draws (each draw's per-size
  gains refitted). It "grows" where the whole interval is above 0, "shrinks" where it is below,
  and is "unclear" otherwise.
- The languages that gain (lose) most, per mixture: each language's mean cell over sizes,
  seeds and tasks, the TOP highest (lowest).

Too little to say anything (the rule: a number is printed only where it can mean something)
- A size's gain needs MIN_CELLS (seed, language) pairs with a gain: with fewer, a bootstrap
  has a handful of distinct draws and its interval is noise. Below that, the size says so.
- The trend needs MIN_SIZES sizes with a gain: a line through two points always fits, so two
  sizes cannot tell a trend from noise in where the sizes fell.
- The language ranking needs MIN_LANGUAGES zero-shot languages: with fewer, "most" and "least"
  are the whole list.
- With one seed, intervals cover the spread over languages only, not seed-to-seed training
  noise: a note says so. No finished trial, no `none` mixture or no other mixture: the answer
  gives the reason instead of numbers.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from raysweep.analysis.gains import intermediate_gains
from raysweep.analysis.points import InputError, Selection, load_points
from raysweep.spec.names import NO_MIXTURE
from raysweep.tasks.aggregate import is_aggregate

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0
MIN_CELLS = 4  # (seed, language) pairs for a size's gain
MIN_SIZES = 3  # sizes with a gain, for the trend
MIN_LANGUAGES = 3  # zero-shot languages, for the ranking
TOP = 3
SOURCE, ALL = "en", "all"  # the fine-tuning language; the tables' "mean over languages" row
VERDICTS = {"grows": "the gain grows with size", "shrinks": "the gain shrinks with size",
            "unclear": "no clear trend of the gain with size (its interval includes 0)"}


@dataclass(frozen=True)
class SizeGain:
    model: str
    n_params: float
    mixture: str
    gain: float | None  # None where too_few says why
    lo: float | None
    hi: float | None
    baseline: float | None  # the zero-shot mean without intermediate training
    value: float | None  # ... and with this mixture
    seeds: int
    languages: int
    too_few: str | None = None


@dataclass(frozen=True)
class Trend:
    mixture: str
    sizes: int
    slope: float | None  # gain per decade of parameters
    lo: float | None
    hi: float | None
    verdict: str  # "grows" | "shrinks" | "unclear" | "too few sizes"
    too_few: str | None = None


@dataclass(frozen=True)
class LanguageGain:
    language: str
    gain: float
    cells: int


@dataclass(frozen=True)
class Languages:
    mixture: str
    gain_most: tuple[LanguageGain, ...] = ()
    lose_most: tuple[LanguageGain, ...] = ()
    too_few: str | None = None


@dataclass(frozen=True)
class Answer:
    sweep: str
    sizes: tuple[SizeGain, ...] = ()
    trends: tuple[Trend, ...] = ()
    languages: tuple[Languages, ...] = ()
    notes: tuple[str, ...] = ()
    reason: str | None = None  # set where there is no answer at all
    level: float = LEVEL
    resamples: int = RESAMPLES
    seed: int = SEED
    rule: dict = field(default_factory=lambda: {"min_cells": MIN_CELLS, "min_sizes": MIN_SIZES,
                                                "min_languages": MIN_LANGUAGES})

    def to_dict(self) -> dict:
        return _finite(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)


def _finite(x):
    """JSON has no NaN: a missing number is null."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def study_answer(sweep_dir: str | Path, *, resamples: int = RESAMPLES,
                 seed: int = SEED) -> Answer:
    """The answer for a sweep directory (see the module docstring)."""
    name = str(sweep_dir)
    try:
        gains = intermediate_gains(load_points(sweep_dir, Selection(languages=None)))
    except InputError as e:
        return Answer(name, reason=str(e))
    rows = [r for r in gains.to_pylist() if r["language"] not in (SOURCE, ALL)
            and not is_aggregate(r["task"])]
    if not rows:
        return Answer(name, reason=f"no zero-shot gains: no mixture besides {NO_MIXTURE!r} has "
                      "a non-English test score in a cell where the baseline has one")
    sizes, trends, languages = [], [], []
    for mixture in sorted({r["mixture"] for r in rows}):
        cube = Cube.of([r for r in rows if r["mixture"] == mixture])
        s, t = _sizes_and_trend(cube, mixture, resamples, seed)
        sizes += s
        trends.append(t)
        languages.append(_languages(cube, mixture))
    sizes.sort(key=lambda s: (s.n_params, s.mixture))
    notes = []
    if max(s.seeds for s in sizes) == 1:
        notes.append("one seed: the intervals cover the spread over languages only, not "
                     "seed-to-seed training noise; add seeds to the space for that")
    return Answer(name, tuple(sizes), tuple(trends), tuple(languages), tuple(notes),
                  resamples=resamples, seed=seed)


@dataclass(frozen=True, eq=False)
class Cube:
    """One mixture's gain cells as arrays [size, seed, task, language], NaN where missing."""

    models: tuple[str, ...]
    n_params: np.ndarray
    languages: tuple[str, ...]
    gain: np.ndarray
    value: np.ndarray
    baseline: np.ndarray

    @classmethod
    def of(cls, rows: list[dict]) -> "Cube":
        sizes = sorted({(r["n_params"], r["model"]) for r in rows})
        seeds = sorted({r["seed"] for r in rows})
        tasks = sorted({r["task"] for r in rows})
        langs = sorted({r["language"] for r in rows})
        shape = (len(sizes), len(seeds), len(tasks), len(langs))
        arrays = {c: np.full(shape, np.nan) for c in ("gain", "value", "baseline")}
        for r in rows:
            at = (sizes.index((r["n_params"], r["model"])), seeds.index(r["seed"]),
                  tasks.index(r["task"]), langs.index(r["language"]))
            for c, a in arrays.items():
                a[at] = r[c]
        return cls(tuple(m for _, m in sizes), np.array([n for n, _ in sizes], float),
                   tuple(langs), **arrays)


def zero_shot_mean(cells: np.ndarray) -> np.ndarray:
    """Mean over seeds of the mean over tasks of the mean over languages, ignoring missing
    cells: [..., seed, task, language] -> [...]."""
    with warnings.catch_warnings():  # an all-missing slice is NaN, on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.nanmean(np.nanmean(cells, axis=-1), axis=-1), axis=-1)


def bootstrap(cells: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """`zero_shot_mean` of `resamples` draws [draw, size]: seeds and languages resampled with
    replacement, the same for every size (so a draw's sizes can be fitted together)."""
    rng = np.random.default_rng(seed)
    _, n_seeds, _, n_langs = cells.shape
    draws = np.empty((resamples, cells.shape[0]))
    for b in range(resamples):
        s = rng.integers(0, n_seeds, n_seeds)
        lang = rng.integers(0, n_langs, n_langs)
        draws[b] = zero_shot_mean(cells[:, s][..., lang])
    return draws


def slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of y on x along the last axis (NaN where any y is missing)."""
    xc = x - x.mean()
    return ((y - y.mean(axis=-1, keepdims=True)) * xc).sum(axis=-1) / (xc ** 2).sum()


def _interval(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q = 100 * (1 - LEVEL) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(draws, [q, 100 - q], axis=0)
    return lo, hi


def _sizes_and_trend(cube: Cube, mixture: str, resamples: int,
                     seed: int) -> tuple[list[SizeGain], Trend]:
    finite = np.isfinite(cube.gain)
    seeds = finite.any(axis=(2, 3)).sum(axis=1)  # per size
    langs = finite.any(axis=(1, 2)).sum(axis=1)
    pairs = finite.any(axis=2).sum(axis=(1, 2))  # (seed, language) pairs with a gain
    enough = pairs >= MIN_CELLS
    gain, value, base = (zero_shot_mean(a) for a in (cube.gain, cube.value, cube.baseline))
    draws = bootstrap(cube.gain, resamples, seed)
    lo, hi = _interval(draws)
    out = []
    for k, model in enumerate(cube.models):
        few = None if enough[k] else (f"too few seeds x languages: {pairs[k]} (seed, language) "
                                      f"pair(s) with a gain, need {MIN_CELLS}")
        out.append(SizeGain(model, float(cube.n_params[k]), mixture,
                            *(None if few else float(v) for v in (gain[k], lo[k], hi[k])),
                            float(base[k]), float(value[k]), int(seeds[k]), int(langs[k]), few))
    n = int(enough.sum())
    if n < MIN_SIZES:
        return out, Trend(mixture, n, None, None, None, "too few sizes",
                          f"too few sizes: {n} with a gain, a trend needs {MIN_SIZES}")
    x = np.log10(cube.n_params[enough])
    fit = float(slope(x, gain[enough]))
    s_lo, s_hi = _interval(slope(x, draws[:, enough]))
    verdict = "grows" if s_lo > 0 else "shrinks" if s_hi < 0 else "unclear"
    return out, Trend(mixture, n, fit, float(s_lo), float(s_hi), verdict)


def _languages(cube: Cube, mixture: str) -> Languages:
    if len(cube.languages) < MIN_LANGUAGES:
        return Languages(mixture, too_few=f"too few languages: {len(cube.languages)}, a "
                         f"ranking needs {MIN_LANGUAGES}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(cube.gain, axis=(0, 1, 2))
    counts = np.isfinite(cube.gain).sum(axis=(0, 1, 2))
    ranked = sorted((LanguageGain(lang, float(m), int(c))
                     for lang, m, c in zip(cube.languages, means, counts) if c),
                    key=lambda g: (-g.gain, g.language))
    k = min(TOP, len(ranked) // 2)  # the two lists never share a language
    return Languages(mixture, tuple(ranked[:k]), tuple(reversed(ranked[-k:])))


# --- what `raysweep show` prints ---------------------------------------------------------------


def _f(x: float | None, sign: bool = False) -> str:
    return "-" if x is None else f"{x:+.4f}" if sign else f"{x:.4f}"


def answer_renderables(answer: Answer) -> list:
    """The answer as rich renderables: the gain table, then one line per trend, language
    ranking and note."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    if answer.reason:
        return [Text(f"No answer to the study's question yet: {answer.reason}")]
    table = Table(title=f"Does intermediate training help zero-shot transfer? Gain over "
                  f"{NO_MIXTURE!r} on the zero-shot mean, {answer.level:.0%} bootstrap interval "
                  "over seeds x languages")
    for col in ("model", "params", "mixture", NO_MIXTURE, "with mixture",
                escape("gain [interval]"), "seeds x languages"):
        table.add_column(col)
    for s in answer.sizes:
        cell = s.too_few if s.gain is None else f"{_f(s.gain, True)} [{_f(s.lo, True)}, " \
            f"{_f(s.hi, True)}]"
        table.add_row(s.model, f"{s.n_params:,.0f}", s.mixture, _f(s.baseline), _f(s.value),
                      escape(cell), f"{s.seeds} x {s.languages}")
    lines = []
    for t in answer.trends:
        if t.slope is None:
            lines.append(f"{t.mixture}: trend with size: {t.too_few}")
        else:
            lines.append(f"{t.mixture}: {VERDICTS[t.verdict]}: slope {_f(t.slope, True)} per "
                         f"decade of parameters [{_f(t.lo, True)}, {_f(t.hi, True)}] over "
                         f"{t.sizes} sizes")
    for g in answer.languages:
        if g.too_few:
            lines.append(f"{g.mixture}: languages: {g.too_few}")
        else:
            lines.append(f"{g.mixture}: gain most: " + ", ".join(
                f"{x.language} {_f(x.gain, True)}" for x in g.gain_most) + "; lose most: "
                + ", ".join(f"{x.language} {_f(x.gain, True)}" for x in g.lose_most))
    return [table, *(Text(line) for line in lines + [f"note: {n}" for n in answer.notes])]
