"""bench/transfer.py's statistics and bookkeeping, on made-up scores (no training): Holm's
correction, figure 3 per size with mixtures, and merging the results of processes run side by
side (one per size) into one README section."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from raysweep.data import get_world, normalize_world

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("transfer_bench", ROOT / "bench" / "transfer.py")
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)

OTHERS = ["xa", "xb", "xc", "xd", "xe"]


def _scores(z: float, en: float = 0.9) -> dict[str, float]:
    return {"en": en, **{c: z for c in OTHERS}}


def _raw(sizes, inter, order, argv) -> dict:
    return {"world": normalize_world({}), "settings": {
        "target": {"steps": 300, "lr": 1e-3}, "intermediate": {"steps": 200, "lr": 2e-3},
        "batch_size": 32, "max_length": 48, "seeds": [0, 1, 2]},
        "sizes": sizes, "inter": inter, "mixture_order": order, "wall_s": 60.0,
        "args": {"quick": False, "threads": 1, "argv": argv}}


def test_holm_step_down():
    # sorted p: 0.01 (x3), 0.02 (x2), 0.04 (x1); adjusted values never decrease
    assert tb.holm({"a": 0.02, "b": 0.01, "c": 0.04}) == pytest.approx(
        {"b": 0.03, "a": 0.04, "c": 0.04})
    assert tb.holm({"a": 0.5, "b": 0.6}) == {"a": 1.0, "b": 1.0}


def test_mixture_entries():
    assert tb.mixture_of("syn_nli_en") == {"tasks": {"syn_nli_en": 1.0}}
    assert tb.mixture_of("syn_nli_en+syn_mlm") == {
        "tasks": {"syn_nli_en": 1.0, "syn_mlm": 1.0}, "sampler": "uniform"}


def test_merged_processes_give_per_size_tables_and_best_mixture():
    none_s = [_scores(z) for z in (0.40, 0.41, 0.42)]
    size_run = {"llama-tiny-s": {"n_params": 102288, "pretrain_steps": 400, "pretrain_s": 5,
                                 "runs": none_s}}
    base = _raw(size_run, {"llama-tiny-s": {"none": none_s}}, ["none"],
                ["--sizes", "llama-tiny-s", "--json", "/tmp/x.json"])
    # a process that ran only intermediate tasks (--skip-none) at the same size
    inter = _raw({}, {"llama-tiny-s": {
        "up": [_scores(z) for z in (0.50, 0.51, 0.52)],
        "down": [_scores(z) for z in (0.30, 0.31, 0.29)],
        "up+down": [_scores(z) for z in (0.55, 0.56, 0.57)]}},
        ["none", "up", "down", "up+down"], ["--skip-none", "--tasks", "up", "down", "up+down"])
    raw = tb.merge([base, inter])
    tests = tb.intermediate_tests(tb.inter_runs(raw)["llama-tiny-s"], OTHERS)
    assert set(tests) == {"up", "down", "up+down"}
    assert tests["up"]["delta"] == pytest.approx(0.10)
    assert tests["down"]["delta"] == pytest.approx(-0.11)
    assert all(t["p_holm"] < 0.05 for t in tests.values())
    best = tb.best_single_vs_mixture(tests)
    assert (best["best_single"], best["best_mixture"]) == ("up", "up+down")
    assert best["mixture_minus_single"] == pytest.approx(0.05)
    w = get_world({})
    text = tb.render(raw, w, OTHERS)
    assert "| up | 90.0 ± 0.0 | 51.0 ± 1.0 | +10.0 |" in text and "**helps**" in text
    assert "| down |" in text and "**hurts**" in text
    assert "best mixture `up+down`: mixture − single = +5.0 points" in text
    assert "--skip-none" in text and "/tmp/x.json" not in text  # both commands, no outputs
    summary = tb.summary(raw, OTHERS)["intermediate"]["llama-tiny-s"]
    assert summary["best_mixture"] == "up+down" and summary["up"]["delta"] > 0


def test_merge_refuses_other_settings():
    a = _raw({}, {}, ["none"], [])
    b = _raw({}, {}, ["none"], [])
    b["settings"]["intermediate"]["lr"] = 1e-3
    with pytest.raises(AssertionError):
        tb.merge([a, b])
