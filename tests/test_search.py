"""Stage-aware search: log grids and searched mixtures on the simplex (finite sets, so trials
share upstream keys), the stage-sharing switch and its bad input, mixture weight columns, the
upstream-first gate, and the ladder's arithmetic. No Ray cluster: pure functions and Tune
objects only."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from raysweep.plan.build import build_plan
from raysweep.plan.grid import (MIXTURE_WEIGHTS, SIMPLEX, grid_points, log_grid, round_to_grid,
                                simplex_point, trial_params)
from raysweep.results.rows import trial_row
from raysweep.results.tables import load, write_trial
from raysweep.run.ladder import (LADDER_FILE, Ladder, PowerLaw, fit_lr, full_point, narrowed,
                                 plan_rung)
from raysweep.run.upstream import Gate, UpstreamFirst
from raysweep.spec import SPACES_DIR, load_space
from raysweep.spec.space import ParamSpec
from test_mixing import rejects_with_exit_2

TASKS = ["syn_antonym", "syn_hypernym", "syn_random"]


def _space(tmp_path: Path, mutate=lambda raw: None) -> Path:
    raw = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    raw["mixtures"]["searched"] = {"tasks": {t: 1.0 for t in TASKS}, "simplex": {"grid": 0.05}}
    raw["search"] = {"algorithm": "optuna", "num_samples": 8, "share_stages": True,
                     "params": {"lr_target": {"loguniform": [1e-4, 1e-2]},
                                "lr_intermediate": {"loguniform": [1e-4, 1e-2], "grid": 5},
                                "mixture": {"values": ["none", "english", "searched"]},
                                "seed": {"values": [0]}}}
    mutate(raw)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _spec(tmp_path, mutate=lambda raw: None):
    return load_space(str(_space(tmp_path, mutate)))[0]


# --- the simplex ------------------------------------------------------------------------------

@pytest.mark.parametrize("grid", [0.05, 0.1, 0.25, 0.5])
def test_simplex_samples_are_nonnegative_and_sum_to_one_after_rounding(grid):
    rng = random.Random(0)
    units = round(1 / grid)
    for _ in range(3000):
        k = rng.randint(2, 7)
        u = {f"t{i}": rng.choice([0.0, rng.random(), 1 - 1e-15]) for i in range(k)}
        w = simplex_point(u)
        assert all(v >= 0 for v in w.values()) and math.isclose(sum(w.values()), 1.0)
        r = round_to_grid(w, units)
        assert all(v > 0 for v in r.values())  # zeros are dropped, never negative
        assert sum(round(v * units) for v in r.values()) == units  # exactly whole units
        assert math.isclose(math.fsum(r.values()), 1.0, abs_tol=1e-9)
        assert all(abs(v * units - round(v * units)) < 1e-9 for v in r.values())  # on the grid
        assert all(abs(r.get(t, 0.0) - w[t]) < grid for t in w)  # the nearest grid point's cell


def test_simplex_draws_cover_the_simplex_like_a_flat_dirichlet():
    """Independent uniform draws map to Dirichlet(1,1,1): each weight's mean is 1/3 and
    P(w_0 < 0.1) = 1 - 0.9^2 = 0.19."""
    rng = np.random.default_rng(0)
    w = np.array([list(simplex_point(dict(enumerate(u))).values())
                  for u in rng.random((20_000, 3))])
    np.testing.assert_allclose(w.mean(axis=0), [1 / 3] * 3, atol=0.01)
    assert abs((w[:, 0] < 0.1).mean() - 0.19) < 0.01


def test_equal_rounded_weights_give_equal_keys(tmp_path):
    spec = _spec(tmp_path)
    base = {"lr_target": 1e-3, "lr_intermediate": 1e-3, "mixture": "searched", "seed": 0}
    # Two different draws that round to the same weights (0.35, 0.35, 0.30 up to 1e-3)...
    near = [{t: 1 - math.exp(-x) for t, x in zip(TASKS, xs)}
            for xs in ([0.351, 0.349, 0.300], [0.349, 0.352, 0.299])]
    plans = [build_plan(spec, spec.models[0], {**base, SIMPLEX: {"searched": u}}) for u in near]
    weights = [p.params[MIXTURE_WEIGHTS] for p in plans]
    assert weights[0] == weights[1] == {"syn_antonym": 0.35, "syn_hypernym": 0.35,
                                        "syn_random": 0.3}
    assert plans[0].stage("intermediate").key == plans[1].stage("intermediate").key
    assert plans[0].stage("intermediate").mixture == weights[0]
    # ... and a draw one grid step away gets its own key.
    far = {t: 1 - math.exp(-x) for t, x in zip(TASKS, [0.45, 0.25, 0.30])}
    other = build_plan(spec, spec.models[0], {**base, SIMPLEX: {"searched": far}})
    assert other.stage("intermediate").key != plans[0].stage("intermediate").key
    # The resolved params resolve to themselves (the driver and the workers agree).
    assert trial_params(spec, plans[0].params) == plans[0].params


def test_mixture_weights_are_columns_of_the_trials_table(tmp_path):
    spec = _spec(tmp_path)
    base = {"lr_target": 1e-3, "lr_intermediate": 1e-3, "seed": 0}
    u = {t: 1 - math.exp(-x) for t, x in zip(TASKS, [0.5, 0.3, 0.2])}
    plans = {"t1": build_plan(spec, spec.models[0], {**base, "mixture": "searched",
                                                     SIMPLEX: {"searched": u}}),
             "t2": build_plan(spec, spec.models[0], {**base, "mixture": "none"}),
             "t3": build_plan(spec, spec.models[0], {**base, "mixture": "english"})}
    for tid, plan in plans.items():
        write_trial(tmp_path / "sweep", trial_row(plan, tid, "done", {"objective": 1.0}, None, 1))
    rows = {r["trial_id"]: r for r in load(tmp_path / "sweep", "trials").to_pylist()}
    assert rows["t1"]["mix_syn_antonym"] == 0.5 and rows["t1"]["mix_syn_random"] == 0.2
    assert rows["t2"]["mix_syn_hypernym"] is None  # no intermediate stage
    assert rows["t3"]["mix_syn_nli_en"] == 1.0 and rows["t3"]["mix_syn_antonym"] is None  # english


# --- log grids and stage sharing ------------------------------------------------------------

def test_log_grid_is_k_log_spaced_points():
    pts = log_grid(1e-4, 1e-2, 5)
    assert pts == [1e-4, 3.162e-4, 1e-3, 3.162e-3, 1e-2]
    assert np.allclose(np.diff(np.log(pts)), np.log(10) / 2, rtol=1e-3)


def test_gridded_upstream_values_share_keys(tmp_path):
    """Trials that draw the same grid point share the intermediate stage; a grid search over a
    gridded range runs its k points."""
    spec = _spec(tmp_path)
    pts = log_grid(1e-4, 1e-2, 5)
    keys = {build_plan(spec, spec.models[0], {"lr_target": lr_t, "lr_intermediate": lr_i,
                                              "mixture": "english", "seed": 0})
            .stage("intermediate").key
            for lr_i in pts for lr_t in (1e-4, 3e-4, 1e-3)}
    assert len(keys) == 5
    def as_grid(raw):
        raw["mixtures"].pop("searched")
        raw["search"].update(algorithm="grid", params={
            **raw["search"]["params"], "lr_target": {"values": [1e-3]},
            "mixture": {"values": ["english"]}})
    grid = _spec(tmp_path, as_grid)
    assert [p["lr_intermediate"] for p in grid_points(grid)] == pts


def test_param_space_draws_grid_points_and_simplex_weights(tmp_path):
    from ray import tune

    from raysweep.run.sweep import param_space

    space = param_space(_spec(tmp_path))
    assert isinstance(space["lr_intermediate"], tune.search.sample.Categorical)
    assert space["lr_intermediate"].categories == log_grid(1e-4, 1e-2, 5)
    assert isinstance(space["lr_target"], tune.search.sample.Float)  # downstream: continuous
    assert sorted(space[SIMPLEX]["searched"]) == TASKS


def _params(**change):
    def mutate(raw):
        raw["search"]["params"].update(change)
    return mutate


BAD = {
    "continuous upstream lr with sharing": (
        _params(lr_intermediate={"loguniform": [1e-4, 1e-2]}),
        "search.params.lr_intermediate.loguniform", "grid: k"),
    "grid without a range": (_params(lr_intermediate={"values": [1e-3], "grid": 3}),
                             "search.params.lr_intermediate.grid", "goes with 'loguniform'"),
    "grid of one point": (_params(lr_intermediate={"loguniform": [1e-4, 1e-2], "grid": 1}),
                          "search.params.lr_intermediate.grid", "greater than or equal to 2"),
    "simplex under a grid search": (
        lambda r: r["search"].update(algorithm="grid", params={
            k: v for k, v in r["search"]["params"].items() if k != "lr_target"} | {
            "lr_target": {"values": [1e-3]}, "lr_intermediate": {"values": [1e-3]}}),
        "mixtures.searched.simplex", "algorithm: optuna"),
    "simplex with weights": (lambda r: r["mixtures"]["searched"]["tasks"].update(syn_random=2.0),
                             "mixtures.searched.tasks", "weight 1.0"),
    "simplex grid not whole": (lambda r: r["mixtures"]["searched"].update(simplex={"grid": 0.3}),
                               "mixtures.searched.simplex", "whole number"),
    "ladder under a grid search": (
        lambda r: r["search"].update(algorithm="grid", ladder=True, params={
            "lr_target": {"values": [1e-3]}, "lr_intermediate": {"values": [1e-3]}}) or
        r["mixtures"].pop("searched"), "search.ladder", "algorithm: optuna"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_search_input_names_the_key(tmp_path, case):
    mutate, key_path, allowed = BAD[case]
    rejects_with_exit_2(tmp_path, _space(tmp_path, mutate), key_path, allowed)


def test_downstream_may_stay_continuous_when_sharing(tmp_path):
    spec = _spec(tmp_path)  # lr_target: a bare loguniform, with share_stages: true
    assert spec.search.share_stages and spec.search.params["lr_target"].grid is None


# --- upstream first --------------------------------------------------------------------------

class ListSearcher:
    """A stand-in inner searcher: hands out fixed configs, remembers what it was told."""

    def __new__(cls, configs):
        from ray.tune.search import Searcher

        class _S(Searcher):
            def __init__(self):
                super().__init__(metric="objective", mode="max")
                self.configs, self.told = list(configs), []

            def suggest(self, trial_id):
                return self.configs.pop(0) if self.configs else None

            def on_trial_complete(self, trial_id, result=None, error=False):
                self.told.append(trial_id)

        return _S()


def test_upstream_first_holds_a_trial_until_its_upstream_stage_is_done():
    done: set = set()
    gate = Gate(lambda c: (("intermediate", c["up"]),), lambda k: k in done)
    inner = ListSearcher([{"up": "P", "n": 1}, {"up": "P", "n": 2}, {"up": "Q", "n": 3}])
    s = UpstreamFirst(inner, gate, hold=2)
    assert s.suggest("t1") == {"up": "P", "n": 1}
    assert s.suggest("t2") is None  # P is being trained by t1: held, not raced
    assert s.suggest("t3") == {"up": "Q", "n": 3}  # another upstream key runs meanwhile
    assert s.suggest("t4") is None  # still P
    done.add(("intermediate", "P"))  # t1's stage is in the store now
    assert s.suggest("t5") == {"up": "P", "n": 2}
    s.on_trial_complete("t5", {"objective": 1.0})
    assert inner.told == ["t2"]  # reported under the id the inner searcher made it for
    s.on_trial_complete("t1", {"objective": 1.0})
    assert "t1" not in gate.running


def test_upstream_first_releases_a_held_trial_when_the_trainer_ends():
    """A trial that ends without its stage done (failed, stopped) no longer holds others."""
    gate = Gate(lambda c: (("intermediate", c["up"]),), lambda k: False)
    s = UpstreamFirst(ListSearcher([{"up": "P"}, {"up": "P"}]), gate, hold=1)
    assert s.suggest("t1") == {"up": "P"}
    assert s.suggest("t2") is None and s.suggest("t3") is None  # held; the hold is full
    s.on_trial_complete("t1", None, error=True)
    assert s.suggest("t4") == {"up": "P"}


# --- the ladder ------------------------------------------------------------------------------

def test_fit_lr_recovers_a_power_law():
    law = PowerLaw(0.5, -0.3)
    fit = fit_lr([(n, law(n)) for n in (1e4, 1e5, 1e6)])
    assert math.isclose(fit.a, 0.5, rel_tol=1e-9) and math.isclose(fit.b, -0.3, rel_tol=1e-9)
    assert math.isclose(fit(1e7), law(1e7), rel_tol=1e-9)
    one = fit_lr([(1e4, 3e-3)])  # one size: the same lr
    assert one.b == 0 and math.isclose(one(1e9), 3e-3)


def test_narrowing_keeps_the_window_inside_the_space():
    p = ParamSpec(loguniform=(1e-4, 1e-2))
    q, first = narrowed(p, 1e-3)
    assert q.loguniform == pytest.approx((1e-3 / 3, 3e-3)) and first == 1e-3
    q, first = narrowed(p, 1.0)  # predicted outside: the edge of the space
    assert q.loguniform == pytest.approx((1e-2 / 3, 1e-2)) and first == 1e-2
    g = ParamSpec(loguniform=(1e-4, 1e-2), grid=5)
    q, first = narrowed(g, 1.2e-3)
    assert q.values == [1e-3, 3.162e-3] and first == 1e-3  # grid points only: keys stay shared
    q, first = narrowed(ParamSpec(values=[1e-5, 1e-4]), 1e-2)
    assert q.values == [1e-4] and first == 1e-4  # nothing inside: the nearest point


def test_plan_rung_predicts_from_the_finished_sizes(tmp_path):
    spec = _spec(tmp_path)
    law = PowerLaw(10.0, -0.5)
    finished = [(1e4, {"lr_target": law(1e4)}), (1e5, {"lr_target": law(1e5)})]
    rung, space, first = plan_rung(spec.search.params, finished, "big", 10**6)
    assert rung.predicted["lr_target"] == pytest.approx(law(1e6))  # 1e-2
    assert space["lr_target"].loguniform == pytest.approx((1e-2 / 3, 1e-2))
    assert "lr_intermediate" not in rung.predicted  # no size found one yet
    point = full_point(spec, {**spec.search.params, **space}, first)
    assert point["lr_target"] == pytest.approx(1e-2) and point["mixture"] == "none"
    assert {k for k in point if k.startswith(SIMPLEX)} == {f"simplex/searched/{t}" for t in TASKS}


def test_ladder_records_prediction_and_finding(tmp_path):
    from raysweep.console import make_console
    from raysweep.results.tables import location

    spec = _spec(tmp_path, lambda r: r["search"].update(ladder=True))
    sweep = location(tmp_path / "sweep")
    ladder = Ladder(spec, sweep, make_console())
    small, mid = spec.models[0], spec.models[1]
    params, points = ladder.before(small)
    assert params == dict(spec.search.params) and points == []  # nothing finished yet
    for tid, (lr, score) in {"a": (1e-3, 50.0), "b": (3e-3, 60.0), "c": (5e-3, 55.0)}.items():
        plan = build_plan(spec, small, {"lr_target": lr, "lr_intermediate": 1e-3,
                                        "mixture": "none", "seed": 0})
        write_trial(sweep, trial_row(plan, tid, "done", {"objective": score}, None, 1.0))
    ladder.after(small)
    params, points = ladder.before(mid)
    assert points[0]["lr_target"] == pytest.approx(3e-3)  # one size: its best lr
    assert params["lr_target"].loguniform == pytest.approx((1e-3, 9e-3))
    record = json.loads((tmp_path / "sweep" / LADDER_FILE).read_text())
    assert record["sizes"][0]["found"] == {"lr_target": 3e-3}
    assert record["sizes"][1]["predicted"]["lr_target"] == pytest.approx(3e-3)


def test_optuna_starts_from_the_ladder_point_and_upstream_first_keeps_keys_apart(tmp_path):
    """The real searcher stack of a size (OptunaSearch, wrapped by UpstreamFirst, keys from the
    plan, done-ness from a real stage store), driven without a cluster: the ladder's point is
    the first suggestion, and no two running trials ever share an undone upstream key."""
    from raysweep.run.store import StageStore
    from raysweep.run.sweep import param_space
    from raysweep.run.upstream import make_searcher

    spec = _spec(tmp_path, lambda r: r["search"].update(ladder=True))
    m = spec.models[0]
    first = {"lr_target": 2e-3}
    point = full_point(spec, dict(spec.search.params), first)
    searcher = make_searcher(spec, m, tmp_path / "stages", [point], hold=4)
    assert isinstance(searcher, UpstreamFirst)
    searcher.set_search_properties("objective", "max", param_space(spec))
    got = searcher.suggest("t0")
    assert got["lr_target"] == 2e-3 and got["mixture"] == "none"
    store, running, most = StageStore(tmp_path / "stages"), {"t0": got}, 1

    def keys(c):  # a trial's stored stages, upstream first
        return [(s.kind, s.key) for s in build_plan(spec, m, c).stages if s.stored]

    for i in range(1, 60):
        config = searcher.suggest(f"t{i}")
        if config is not None:
            for other in running.values():
                shared = set(keys(config)) & set(keys(other))
                assert all(store.is_done(*k) for k in shared), shared
            running[f"t{i}"] = config
            most = max(most, len(running))
        # The oldest running trial makes progress: its next stage lands in the store, or it ends.
        tid, oldest = next(iter(running.items()))
        todo = [k for k in keys(oldest) if not store.is_done(*k)]
        if todo:
            out = store.path(*todo[0])
            out.mkdir(parents=True, exist_ok=True)
            (out / "STATUS").write_text(json.dumps({"status": "done"}))
        else:
            searcher.on_trial_complete(tid, {"objective": float(i)})
            del running[tid]
    assert most >= 2  # distinct upstream keys did run side by side
    # Tune checkpoints the searcher chain as it runs (ConcurrencyLimiter > UpstreamFirst >
    # Optuna): the wrapper's state must save and come back.
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    chain = SearchGenerator(ConcurrencyLimiter(searcher, 4))
    chain.save_to_dir(str(tmp_path), "s")
    again = make_searcher(spec, m, tmp_path / "stages", [], hold=4)
    SearchGenerator(ConcurrencyLimiter(again, 4)).restore_from_dir(str(tmp_path))
    assert again.held == searcher.held and again.gate.running == searcher.gate.running
    assert again.inner_id == searcher.inner_id


@pytest.mark.slow
def test_ladder_and_simplex_through_a_real_sweep(ray_cluster, tmp_path):
    """Wiring only, two tiny sizes of two trials each on local Ray: Optuna draws the simplex
    and the gridded upstream lr, the second size starts from the ladder's point and stays in
    its window, and ladder.json and the mix_ columns are written."""
    from raysweep.run.sweep import launch

    def quick(raw):
        raw["name"] = "ladder"
        raw["models"] = [{"name": "tiny-xs", "tiny": "llama-tiny-xs", "pretrain_steps": 20},
                         {"name": "tiny-s", "tiny": "llama-tiny-s", "pretrain_steps": 20}]
        raw["stages"]["intermediate"].update(steps=10, log_every=5)
        raw["stages"]["target"].update(steps=10, eval_every=5, log_every=5)
        raw["stages"]["eval"]["max_examples"] = 48
        raw["mixtures"]["searched"]["tasks"] = {"syn_hypernym": 1.0, "syn_antonym": 1.0}
        raw["search"].update(num_samples=2, ladder=True)
        raw["search"]["params"].update(mixture={"values": ["searched"]},
                                       lr_intermediate={"loguniform": [1e-3, 4e-3], "grid": 2})

    path = _space(tmp_path, quick)
    spec, file = load_space(str(path))
    result = launch(spec, file, tmp_path / "runs")
    assert result.errors == 0
    trials = load(result.sweep_dir, "trials").to_pylist()
    assert len(trials) == 4
    ladder = json.loads((Path(result.sweep_dir) / LADDER_FILE).read_text())
    xs, s = ladder["sizes"]
    best_xs = max((t for t in trials if t["model"] == "tiny-xs"), key=lambda t: t["objective"])
    assert xs["found"]["lr_target"] == best_xs["lr_target"]
    assert s["predicted"]["lr_target"] == pytest.approx(best_xs["lr_target"])  # one size: same
    lo, hi = s["searched"]["lr_target"]["loguniform"]
    s_lrs = [t["lr_target"] for t in trials if t["model"] == "tiny-s"]
    assert all(lo <= lr <= hi for lr in s_lrs)
    assert any(lr == pytest.approx(s["predicted"]["lr_target"]) for lr in s_lrs)
    assert all(t["lr_intermediate"] in (1e-3, 4e-3) for t in trials)
    for t in trials:
        assert math.isclose(t["mix_syn_hypernym"] + t["mix_syn_antonym"], 1.0)
