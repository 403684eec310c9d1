"""`raysweep show` answers the study's question: the gain per size with its bootstrap interval,
the languages that gain and lose most, the trend with size, `--json`, and "too few" instead of
noise. Checked against hand computations on small sweeps written here through the real writers
(`raysweep.results.tables`, the real schema)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from raysweep.analysis.answer import LEVEL, study_answer
from raysweep.cli.app import app
from raysweep.results.tables import MetricsWriter, write_trial

TASK = "syn_xnli"
SIZES = {"s1": 1_000_000, "s2": 10_000_000, "s3": 100_000_000}  # log10 N = 6, 7, 8
# The gain of `english` over `none` per size, seed and zero-shot language (the hand-made truth).
GAIN = {
    "s1": {0: {"de": 0.04, "fr": 0.02, "sw": 0.00}, 1: {"de": 0.03, "fr": 0.05, "sw": -0.01}},
    "s2": {0: {"de": 0.02, "fr": 0.01, "sw": -0.02}, 1: {"de": 0.01, "fr": 0.04, "sw": -0.03}},
    "s3": {0: {"de": 0.00, "fr": 0.00, "sw": -0.04}, 1: {"de": -0.01, "fr": 0.03, "sw": -0.05}},
}
BASE = {"de": 0.50, "fr": 0.55, "sw": 0.40}


def add_trial(root, trial_id, model, mixture, seed, dev, scores):
    """One finished trial: its English dev score (what selects it) and its test scores."""
    identity = {"sweep": root.name, "trial_id": trial_id, "model": model,
                "n_params": SIZES[model], "lr_target": 1e-3, "mixture": mixture,
                "mixture_kind": "none" if mixture == "none" else "english", "seed": seed}
    w = MetricsWriter(root, trial_id, identity)
    w.add(stage="eval", task=TASK, language="en", split="validation", metric="score",
          value=dev, step=10)
    for lang, score in scores.items():
        w.add(stage="eval", task=TASK, language=lang, split="test", metric="score", value=score)
    w.flush("eval")
    write_trial(root, {**identity, "status": "done", "objective": dev, "zero_shot": 0.0})


def write_fixture(root, gain=GAIN, base=BASE):
    n = itertools.count()
    for model, by_seed in gain.items():
        for seed, by_lang in by_seed.items():
            none = {lang: base[lang] + 0.01 * seed for lang in by_lang}
            english = {lang: none[lang] + g for lang, g in by_lang.items()}
            # Cells that are not zero-shot: English, the non-English mean, an aggregate. Huge
            # gains, so that counting any of them moves every number.
            none.update(en=0.8, all=0.5)
            english.update(en=0.8 + 0.5, all=0.5 + 0.5)
            add_trial(root, f"t_{next(n):05d}", model, "none", seed, 0.7, none)
            add_trial(root, f"t_{next(n):05d}", model, "english", seed, 0.7, english)
    # A `none` trial with a worse English dev score and better test scores: never the baseline
    # (choosing by test scores would select on the test set).
    add_trial(root, "t_99999", "s1", "none", 0, 0.1, {lang: 0.99 for lang in BASE})
    return root


@pytest.fixture
def sweep(tmp_path):
    return write_fixture(tmp_path / "fixture")


def hand_mean(cells):
    """Mean over seeds of the mean over languages (one task), by hand."""
    return sum(sum(v.values()) / len(v) for v in cells.values()) / len(cells)


def test_gain_per_size_matches_hand_computation(sweep):
    a = study_answer(sweep)
    assert a.reason is None
    got = {s.model: s for s in a.sizes}
    assert set(got) == set(SIZES) and {s.mixture for s in a.sizes} == {"english"}
    assert got["s1"].gain == pytest.approx(0.13 / 6)  # (.04+.02+.00+.03+.05-.01) / 6
    assert got["s2"].gain == pytest.approx(0.03 / 6)
    assert got["s3"].gain == pytest.approx(-0.07 / 6)
    for model, s in got.items():
        assert s.gain == pytest.approx(hand_mean(GAIN[model]))
        none = {seed: {lang: BASE[lang] + 0.01 * seed for lang in langs}
                for seed, langs in GAIN[model].items()}
        assert s.baseline == pytest.approx(hand_mean(none))
        assert s.value == pytest.approx(s.baseline + s.gain)
        assert (s.seeds, s.languages, s.too_few) == (2, 3, None)
        assert s.lo <= s.gain <= s.hi


def test_interval_is_the_bootstrap_over_seeds_and_languages(sweep):
    """By hand: the exact bootstrap distribution of s1's gain, every one of the 2^2 seed draws
    times 3^3 language draws, equally likely; the seeded Monte Carlo interval lands on its
    quantiles."""
    cells = np.array([[GAIN["s1"][seed][lang] for lang in ("de", "fr", "sw")] for seed in (0, 1)])
    exact = [cells[list(s)][:, list(lang)].mean()
             for s in itertools.product(range(2), repeat=2)
             for lang in itertools.product(range(3), repeat=3)]
    q = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(exact, [q, 100 - q])
    s1 = next(s for s in study_answer(sweep).sizes if s.model == "s1")
    assert s1.lo == pytest.approx(lo, abs=0.002) and s1.hi == pytest.approx(hi, abs=0.002)
    assert s1.hi - s1.lo > 0.01  # a real spread, not a point


def test_interval_is_deterministic_and_really_resampled(tmp_path):
    # Irregular gains over 3 seeds x 8 languages: the bootstrap distribution has so many atoms
    # that two unseeded runs would not share their interval ends.
    rng = np.random.default_rng(7)
    langs = [f"l{i}" for i in range(8)]
    gain = {m: {seed: {lang: float(rng.normal(0.01, 0.02)) for lang in langs}
                for seed in range(3)} for m in SIZES}
    sweep = write_fixture(tmp_path / "irregular", gain, {lang: 0.4 for lang in langs})
    first, again = study_answer(sweep).to_dict(), study_answer(sweep).to_dict()
    assert first == again
    other = study_answer(sweep, seed=1).to_dict()
    assert [s["gain"] for s in other["sizes"]] == [s["gain"] for s in first["sizes"]]
    assert [s["lo"] for s in other["sizes"]] != [s["lo"] for s in first["sizes"]]


def test_constant_gain_has_a_zero_width_interval(tmp_path):
    flat = {m: {seed: {lang: 0.02 for lang in BASE} for seed in (0, 1)} for m in SIZES}
    a = study_answer(write_fixture(tmp_path / "flat", flat))
    for s in a.sizes:
        assert s.gain == s.lo == s.hi == pytest.approx(0.02)
    assert a.trends[0].slope == pytest.approx(0.0, abs=1e-12)
    assert a.trends[0].verdict == "unclear"  # an interval [0, 0] is not above or below 0


def test_trend_and_languages(sweep):
    a = study_answer(sweep)
    (trend,) = a.trends
    # Least squares through x = 6, 7, 8 (equally spaced): slope = (y3 - y1) / 2.
    assert trend.slope == pytest.approx((-0.07 / 6 - 0.13 / 6) / 2)
    assert trend.sizes == 3
    # Every seed and every language shrinks from s1 to s3, so every draw's slope is negative.
    assert trend.lo <= trend.slope <= trend.hi < 0 and trend.verdict == "shrinks"
    (langs,) = a.languages
    # Means over sizes and seeds: de .09/6, fr .15/6, sw -.15/6; with 3 languages, one each.
    assert [(g.language, round(g.gain, 12), g.cells) for g in langs.gain_most] == \
        [("fr", round(0.15 / 6, 12), 6)]
    assert [(g.language, round(g.gain, 12)) for g in langs.lose_most] == \
        [("sw", round(-0.15 / 6, 12))]


def test_too_few_seeds_and_sizes_say_so(tmp_path):
    few = {m: {0: {"de": 0.1, "sw": 0.2}} for m in ("s1", "s2")}  # 1 seed x 2 languages, 2 sizes
    root = write_fixture(tmp_path / "few", few)
    a = study_answer(root)
    assert all(s.gain is None and s.lo is None and "too few seeds x languages" in s.too_few
               for s in a.sizes)
    assert a.trends[0].slope is None and "too few sizes: 0" in a.trends[0].too_few
    assert "too few languages: 2" in a.languages[0].too_few
    assert any("one seed" in n for n in a.notes)
    out = CliRunner().invoke(app, ["show", str(root)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "too few seeds x languages" in out.output and "too few sizes" in out.output
    assert "+0.1500" not in out.output  # the noisy mean is not printed
    data = json.loads(CliRunner().invoke(app, ["show", "--json", str(root)]).output)
    assert [s["gain"] for s in data["sizes"]] == [None, None]


def test_no_baseline_gives_the_reason(tmp_path):
    root = tmp_path / "nobase"
    add_trial(root, "t_00000", "s1", "english", 0, 0.7, {"de": 0.5})
    a = study_answer(root)
    assert a.sizes == () and "'none'" in a.reason
    out = CliRunner().invoke(app, ["show", str(root)], env={"COLUMNS": "250"})
    assert out.exit_code == 0 and "No answer to the study's question yet" in out.output


def test_show_prints_the_answer_and_json_gives_the_same(sweep):
    out = CliRunner().invoke(app, ["show", str(sweep)], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    assert "+0.0217 [" in out.output  # s1's gain, .13 / 6
    assert "the gain shrinks with size: slope -0.0167" in out.output
    assert "gain most: fr +0.0250; lose most: sw -0.0250" in out.output
    out = CliRunner().invoke(app, ["show", "--json", str(sweep)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output) == study_answer(sweep).to_dict()


def test_show_json_on_a_directory_that_is_not_a_sweep_exits_2(tmp_path):
    out = CliRunner().invoke(app, ["show", "--json", str(tmp_path)])
    assert out.exit_code == 2
    assert "not a sweep directory" in out.output
