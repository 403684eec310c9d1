"""Mixing strategies: each class against its formula, the old names' exact draws, the space's
strategy syntax (string and {name: params}), and its bad input (exit 2, key path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from raysweep.cli.app import app
from raysweep.plan.build import build_plan
from raysweep.spec import SPACES_DIR, SpaceError, SweepSpec, load_space
from raysweep.spec.mixtures import Strategy
from raysweep.train.mixing import SAMPLERS

SIZES = {"a": 100, "b": 10, "c": 1000}
WEIGHTS = {"a": 1.0, "b": 0.5}  # c: 1.0 by default

# Draws of the samplers before the strategies were split out (commit 4826de3), seed 7: a stage
# trained with the old names must draw the same tasks, so fp32 numbers and keys do not move.
OLD_DRAWS = {
    "proportional": "ccccccaccccccccccccccccaacccccccaccccacc",
    "uniform": "cccaacaccbaaabbbccccaacaabbccbbaaacaaaca",
    "temperature": "cccaccacccccbcccccccaacaaccccccbaacacaca",
}


@pytest.mark.parametrize("name", sorted(OLD_DRAWS))
def test_old_names_draw_as_before(name):
    s = SAMPLERS[name](SIZES, WEIGHTS, 7)
    assert "".join(s() for _ in range(40)) == OLD_DRAWS[name]
    # ... and through the space's syntax, which keeps the bare name at default parameters
    canonical = Strategy.model_validate(name).canonical(steps=200)
    assert canonical == name
    s = SAMPLERS[canonical](SIZES, WEIGHTS, 7)
    assert "".join(s() for _ in range(40)) == OLD_DRAWS[name]


def _p(d: dict[str, float]) -> np.ndarray:
    v = np.array([d[t] for t in SIZES], float)
    return v / v.sum()


W = {t: WEIGHTS.get(t, 1.0) for t in SIZES}
FORMULAS = {  # spec -> p_i ∝ w_i · b_i, written out by hand
    "uniform": _p({t: W[t] for t in SIZES}),
    "proportional": _p({t: W[t] * SIZES[t] for t in SIZES}),
    "temperature": _p({t: W[t] * SIZES[t] ** 0.5 for t in SIZES}),
    '{"temperature": {"T": 3, "cap": 50}}': _p({t: W[t] * min(SIZES[t], 50) ** (1 / 3)
                                              for t in SIZES}),
    '{"specified": {"weights": {"a": 2, "b": 0, "c": 6}}}': _p({"a": 2, "b": 0, "c": 6}),
}


@pytest.mark.parametrize("spec", sorted(FORMULAS))
def test_each_strategy_follows_its_formula(spec):
    import json

    key = json.loads(spec) if spec.startswith("{") else spec
    s = SAMPLERS[key](SIZES, WEIGHTS, 0)
    np.testing.assert_allclose(s.probabilities(), FORMULAS[spec], rtol=1e-12)
    draws = [s() for _ in range(20_000)]
    freq = np.array([draws.count(t) for t in SIZES]) / len(draws)
    np.testing.assert_allclose(freq, FORMULAS[spec], atol=0.015)  # the draws follow p


def test_temperature_cap_counts_a_huge_task_as_cap_examples():
    sizes = {"small": 100, "huge": 1_000_000}
    capped = SAMPLERS[{"temperature": {"T": 1, "cap": 100}}](sizes, {}, 0)
    np.testing.assert_allclose(capped.probabilities(), [0.5, 0.5])
    uncapped = SAMPLERS[{"temperature": {"T": 1}}](sizes, {}, 0)
    np.testing.assert_allclose(uncapped.probabilities(), [100 / 1_000_100, 1_000_000 / 1_000_100])


def test_linear_goes_from_start_to_end_over_the_steps():
    steps = 11
    s = SAMPLERS[{"linear": {"start": {"a": 1, "b": 0, "c": 0}, "end": {"a": 0, "b": 1, "c": 3},
                             "steps": steps}}](SIZES, {}, 0)
    np.testing.assert_allclose(s.at(0), [1, 0, 0])
    np.testing.assert_allclose(s.at(5), _p({"a": 0.5, "b": 0.5, "c": 1.5}))
    np.testing.assert_allclose(s.at(steps - 1), [0, 0.25, 0.75])
    np.testing.assert_allclose(s.at(10 * steps), [0, 0.25, 0.75])  # after the end: the end
    draws = [s() for _ in range(steps)]
    assert draws[0] == "a" and draws[-1] != "a"  # each call is one step
    assert s.t == steps


def _space(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    raw["mixtures"]["pair"] = {"tasks": {"syn_hypernym": 1.0, "syn_antonym": 1.0}}
    mutate(raw)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _set(where: str, value):
    def mutate(raw):
        node = raw
        *parents, last = where.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return mutate


def test_strategy_syntax_reaches_the_stage_config_and_key(tmp_path):
    """A mixture's own strategy overrides the stage's; parameters are in the stage key; the
    linear schedule gets the stage's steps."""
    params = {"lr_target": 1e-3, "lr_intermediate": 2e-3, "mixture": "pair", "seed": 0}
    keys = {}
    for name, sampler in [("stage", None), ("temp", {"temperature": {"T": 3, "cap": 10}}),
                          ("linear", {"linear": {"start": {"syn_hypernym": 1, "syn_antonym": 0},
                                                 "end": {"syn_hypernym": 0, "syn_antonym": 1}}})]:
        spec, _ = load_space(str(_space(tmp_path, _set("mixtures.pair.sampler", sampler)
                                        if sampler else lambda r: None)))
        stage = build_plan(spec, spec.models[0], params).stage("intermediate")
        keys[name] = stage.key
        if name == "stage":
            assert stage.sampler == "proportional"
        elif name == "temp":
            assert stage.sampler == {"temperature": {"T": 3.0, "cap": 10}}
        else:
            assert stage.sampler["linear"]["steps"] == spec.stages.intermediate.steps
        SAMPLERS[stage.sampler]({t: 5 for t in stage.mixture}, stage.mixture, 0)()  # it builds
    assert len(set(keys.values())) == 3
    # The normalized space (what trials receive) parses back to the same spec.
    spec, _ = load_space(str(_space(tmp_path, _set("mixtures.pair.sampler",
                                                   {"temperature": {"T": 3}}))))
    assert SweepSpec.model_validate(spec.normalized) == spec


LINEAR_OK = {"start": {"syn_hypernym": 1, "syn_antonym": 0},
             "end": {"syn_hypernym": 0, "syn_antonym": 1}}
BAD = {
    "unknown strategy name": (_set("stages.intermediate.sampler", "softmax"),
                              "stages.intermediate.sampler", "unknown strategy 'softmax'"),
    "unknown strategy block": (_set("stages.intermediate.sampler", {"annealed": {"T": 2}}),
                               "stages.intermediate.sampler", "allowed: uniform, proportional"),
    "two strategies": (_set("stages.intermediate.sampler", {"uniform": {}, "proportional": {}}),
                       "stages.intermediate.sampler", "give one strategy"),
    "bad temperature": (_set("stages.intermediate.sampler", {"temperature": {"T": 0}}),
                        "stages.intermediate.sampler.temperature.T", "greater than 0"),
    "unknown parameter": (_set("stages.intermediate.sampler", {"temperature": {"tau": 2}}),
                          "stages.intermediate.sampler.temperature.tau", "allowed keys: T, cap"),
    "negative weight": (_set("mixtures.pair.sampler", {"specified": {"weights": {
        "syn_hypernym": -1, "syn_antonym": 2}}}),
        "mixtures.pair.sampler.specified.weights.syn_hypernym", "greater than or equal to 0"),
    "all-zero weights": (_set("mixtures.pair.sampler", {"specified": {"weights": {
        "syn_hypernym": 0, "syn_antonym": 0}}}),
        "mixtures.pair.sampler.specified.weights", "every weight is 0"),
    "negative mixture weight": (_set("mixtures.pair.tasks", {"syn_hypernym": -1.0}),
                                "mixtures.pair.tasks.syn_hypernym", "greater than 0"),
    "weights of other tasks": (_set("mixtures.pair.sampler", {"specified": {"weights": {
        "syn_hypernym": 1, "syn_random": 2}}}),
        "mixtures.pair.sampler.specified.weights", "allowed: the tasks of mixture 'pair'"),
    "endpoints name different tasks": (_set("mixtures.pair.sampler", {"linear": {
        **LINEAR_OK, "end": {"syn_hypernym": 0, "syn_random": 1}}}),
        "mixtures.pair.sampler.linear.end", "the endpoints name different tasks"),
    "all-zero endpoint": (_set("mixtures.pair.sampler", {"linear": {
        **LINEAR_OK, "start": {"syn_hypernym": 0, "syn_antonym": 0}}}),
        "mixtures.pair.sampler.linear.start", "every weight is 0"),
    # A stage-wide specified strategy must fit every mixture with tasks ('english' has one).
    "stage-wide weights vs a mixture": (_set("stages.intermediate.sampler", {"specified": {
        "weights": {"syn_hypernym": 1, "syn_antonym": 1}}}),
        "stages.intermediate.sampler.specified.weights", "mixture 'english'"),
}


def rejects_with_exit_2(tmp_path: Path, path: Path, key_path: str, allowed: str) -> None:
    """The space is a SpaceError at exactly `key_path`, saying `allowed`; launch exits 2 and
    writes nothing. (test_search.py uses it too.)"""
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert err.value.path == key_path, str(err.value)
    assert allowed in str(err.value)
    result = CliRunner().invoke(app, ["launch", "--space", str(path), "--storage",
                                      str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_strategies_exit_2_with_key_path(tmp_path, case):
    mutate, key_path, allowed = BAD[case]
    rejects_with_exit_2(tmp_path, _space(tmp_path, mutate), key_path, allowed)


def test_a_time_dependent_mixture_trains_through_the_runner(tmp_path):
    """The stage config's {linear: ...} reaches the Trainer's sampler lookup in a real (one
    process, no Ray) run of a trial's stages, and the stage trains all its steps."""
    import torch

    from raysweep.results.tables import load
    from raysweep.run.runner import TrialRunner

    torch.set_num_threads(1)

    def small(raw):
        raw["models"] = [{**raw["models"][0], "pretrain_steps": 10}]
        raw["stages"]["intermediate"].update(steps=8, log_every=1)
        raw["stages"]["target"].update(steps=4, eval_every=4, log_every=4)
        raw["stages"]["eval"]["max_examples"] = 16
        raw["mixtures"]["pair"]["sampler"] = {"linear": {
            "start": {"syn_hypernym": 1, "syn_antonym": 0},
            "end": {"syn_hypernym": 0, "syn_antonym": 1}}}

    spec, _ = load_space(str(_space(tmp_path, small)))
    plan = build_plan(spec, spec.models[0], {"lr_target": 1e-3, "lr_intermediate": 2e-3,
                                             "mixture": "pair", "seed": 0})
    TrialRunner(plan, tmp_path / "store", tmp_path / "sweep", "t0").run()
    rows = [r for r in load(tmp_path / "sweep", "metrics").to_pylist()
            if r["stage"] == "intermediate" and r["metric"] == "loss"]
    assert len(rows) == 8
    assert {r["step"] for r in rows} == set(range(1, 9))
