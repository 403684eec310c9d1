"""`raysweep plan`'s arithmetic, checked by hand on a small space: the stage DAG after sharing
(stage count), tokens, FLOPs and the reuse factor; the JSON contract; an unknown space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.data.world import get_world
from raysweep.plan.build import build_plan
from raysweep.plan.cost import plan_cost, trial_points
from raysweep.spec import load_space

SMALL = """
name: small
models: [{name: xs, tiny: llama-tiny-xs, pretrain_steps: 10}]
stages:
  pretrain: {corpus: syn_corpus, batch_size: 4, max_length: 16}
  intermediate: {steps: 5, batch_size: 8, max_length: 32}
  target: {tasks: [syn_xnli], steps: 7, batch_size: 4, max_length: 24}
  eval: {max_examples: 3}
mixtures:
  none: {}
  english: {tasks: {syn_hypernym: 1.0}}
search:
  algorithm: %(algorithm)s
  num_samples: %(samples)d
  params:
    lr_target: %(lr_target)s
    lr_intermediate: %(lr_intermediate)s
    mixture: {values: [none, english]}
resources: {workers: 2}
"""


def _space(tmp_path: Path, algorithm="grid", samples=1, lr_target="{values: [1.0e-3, 2.0e-3, 3.0e-3]}",
           lr_intermediate="{values: [1.0e-3, 2.0e-3]}"):
    f = tmp_path / "small.yaml"
    f.write_text(SMALL % dict(algorithm=algorithm, samples=samples, lr_target=lr_target,
                              lr_intermediate=lr_intermediate))
    return load_space(str(f))[0], f


def _fpt(seq: int) -> float:
    """llama-tiny-xs's training FLOPs per token, written out: hidden 16, intermediate 48, one
    layer, 2 heads, 1 kv head (head_dim 8), the world's vocabulary."""
    v, h, i, kv = len(get_world({}).vocab), 16, 48, 8
    layer = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
    non_embedding_plus_head = layer + h + v * h
    return 6 * non_embedding_plus_head + 12 * 1 * h * seq


def test_grid_plan_by_hand(tmp_path):
    spec, _ = _space(tmp_path)
    cost = plan_cost(spec)
    # 3 lr_target x 2 lr_intermediate x 2 mixtures = 12 trials. After sharing: 1 pretrain, 2
    # intermediate (one per lr_intermediate; "none" has none), 12 target, 12 eval.
    assert cost.trials == {"xs": 12}
    kinds = [s.kind for s in cost.stages]
    assert (kinds.count("pretrain"), kinds.count("intermediate")) == (1, 2)
    assert sum(s.runs for s in cost.stages if s.kind == "target") == 12
    assert sum(s.runs for s in cost.stages if s.kind == "eval") == 12
    inter = next(s for s in cost.stages if s.kind == "intermediate")
    assert inter.trials == 3 and inter.runs == 1
    assert inter.tokens == 5 * 8 * 32
    assert inter.flops == pytest.approx(5 * 8 * 32 * _fpt(32))
    pre = next(s for s in cost.stages if s.kind == "pretrain")
    assert pre.tokens == 10 * 4 * 16 and pre.trials == 12
    target = next(s for s in cost.stages if s.kind == "target")
    assert target.flops == pytest.approx(7 * 4 * 24 * _fpt(24))
    ev = next(s for s in cost.stages if s.kind == "eval")
    n_langs = len(spec.stages.eval.languages) if isinstance(spec.stages.eval.languages, list) \
        else len(ev.config.languages["syn_xnli"])
    assert ev.tokens == n_langs * 3 * 24  # max_examples x the target's max_length
    assert ev.flops == pytest.approx(ev.tokens * _fpt(24) / 3)  # forward only
    # Naively every one of the 6 trials with a mixture trains its own intermediate stage: 3x.
    assert cost.reuse_factor == pytest.approx(3.0)
    t = cost.totals()
    shared = pre.flops + 2 * inter.flops + 12 * target.flops + 12 * ev.flops
    assert t["total_flops"] == pytest.approx(shared)
    assert t["naive_total_flops"] == pytest.approx(shared + 11 * pre.flops + 4 * inter.flops)


def test_optuna_counts_draws_spread_over_finite_values(tmp_path):
    # 10 trials over 2 lr_intermediate x 2 mixtures: trial t takes point t % 4, so the 5 trials
    # with a mixture train 2 intermediate stages (a lower bound on sharing): reuse 5 / 2.
    spec, _ = _space(tmp_path, "optuna", 10, "{loguniform: [1.0e-4, 1.0e-2]}")
    cost = plan_cost(spec)
    assert [s.kind for s in cost.stages].count("intermediate") == 2
    assert cost.reuse_factor == pytest.approx(2.5)
    assert len({p["lr_target"] for p in trial_points(spec)}) == 10  # continuous: one per trial
    # A continuous upstream lr: every trial its own intermediate stage, nothing shared.
    spec, _ = _space(tmp_path, "optuna", 10, "{loguniform: [1.0e-4, 1.0e-2]}",
                     "{loguniform: [1.0e-4, 1.0e-2]}")
    assert plan_cost(spec).reuse_factor == pytest.approx(1.0)


def test_plan_json_contract_and_unknown_space(tmp_path):
    _, f = _space(tmp_path)
    res = CliRunner().invoke(app, ["plan", "--space", str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["reuse_factor"] == pytest.approx(3.0) and out["total_flops"] > 0
    assert all(s["memory_gb_per_rank"] > 0 for s in out["stages"])
    res = CliRunner().invoke(app, ["plan", "--space", "no_such_space"])
    assert res.exit_code == 2 and "no such search space" in res.output


def test_llama_scaling_reuses_intermediate_stages_5x():
    spec, _ = load_space("llama_scaling")
    cost = plan_cost(spec)
    assert cost.reuse_factor >= 5
    # tiny_scaling: one pretrain per size, the "english" intermediate stage shared by 2 trials.
    tiny = plan_cost(load_space("tiny_scaling")[0])
    assert tiny.reuse_factor == pytest.approx(2.0)
    assert [s.kind for s in tiny.stages].count("pretrain") == 3


def test_spend_rows_and_what_reuse_saved(tmp_path):
    """Two real trials (one process, no Ray) on one stage store: the first trains pretrain and
    intermediate, the second reuses both. Every stage leaves its spend; the reused stages record
    what they cost when trained, and `show` prints the spend and the saving."""
    import torch
    from test_reproducible import small_plan  # tiny-xs, a few steps per stage

    from raysweep.results.show import best_tables
    from raysweep.results.spend import sweep_spend
    from raysweep.results.tables import load
    from raysweep.run.runner import run_local

    torch.set_num_threads(1)
    sweep = tmp_path / "sweep"
    for trial in ("t0", "t1"):  # the same plan: t1 finds both stored stages done
        run_local(small_plan(), tmp_path, sweep, trial)
    rows = [r for r in load(sweep, "metrics").to_pylist() if r["split"] == "spend"]
    got = {(r["trial_id"], r["stage"], r["metric"]): r for r in rows}
    assert {(t, s) for t, s, _ in got} == {(t, s) for t in ("t0", "t1")
                                           for s in ("pretrain", "intermediate", "target", "eval")}
    for s in ("pretrain", "intermediate"):
        assert got[("t0", s, "reused")]["value"] == 0 and got[("t1", s, "reused")]["value"] == 1
        trained = got[("t0", s, "flops")]["value"]
        assert trained > 0 and got[("t1", s, "flops")]["value"] == trained  # what reuse saved
        assert got[("t0", s, "tokens")]["value"] > 0
    assert got[("t1", "target", "reused")]["value"] == 0
    for r in rows:
        assert r["wall_s"] > 0 and r["device_s"] == pytest.approx(r["wall_s"])  # one CPU rank
    spend = sweep_spend(sweep)
    assert spend.runs == {"pretrain": 1, "intermediate": 1, "target": 2, "eval": 2}
    assert spend.reuses == {"pretrain": 1, "intermediate": 1}
    assert spend.saved_flops["intermediate"] == got[("t0", "intermediate", "flops")]["value"]
    assert spend.saved_device_s["pretrain"] == got[("t0", "pretrain", "flops")]["device_s"]
    titles = [str(t.title) for t in best_tables(sweep)]
    assert any(t.startswith("spend: ") and "reuse saved" in t for t in titles)


def test_a_searched_mixture_shares_only_what_rounds_alike(tmp_path):
    """A simplex mixture over two tasks on a 0.5 grid has three rounded points ({1, 0},
    {0.5, 0.5}, {0, 1}): 12 optuna trials train at most 3 intermediate stages between them."""
    text = (SMALL % dict(algorithm="optuna", samples=12, lr_target="{loguniform: [1.0e-4, 1.0e-2]}",
                         lr_intermediate="{values: [1.0e-3]}"))
    text = text.replace("english: {tasks: {syn_hypernym: 1.0}}",
                        "english: {tasks: {syn_hypernym: 1.0, syn_antonym: 1.0}, "
                        "simplex: {grid: 0.5}}")
    text = text.replace("mixture: {values: [none, english]}", "mixture: {values: [english]}")
    f = tmp_path / "simplex.yaml"
    f.write_text(text)
    cost = plan_cost(load_space(str(f))[0])
    inter = [s for s in cost.stages if s.kind == "intermediate"]
    assert 2 <= len(inter) <= 3 and sum(s.trials for s in inter) == 12
    assert {tuple(sorted(s.config.mixture.values())) for s in inter} <= {(1.0,), (0.5, 0.5)}
    assert cost.reuse_factor == pytest.approx(12 / len(inter))
