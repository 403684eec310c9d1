"""Same config, same numbers on CPU: two runs of one trial's stages into fresh stores give
identical metric rows (losses, dev and test scores)."""

from __future__ import annotations

import torch

from raysweep.plan.build import build_plan
from raysweep.results.tables import load
from raysweep.spec import SweepSpec, load_space
from raysweep.run.runner import TrialRunner


def small_plan():
    spec, _ = load_space("tiny_scaling")
    raw = spec.model_dump(mode="json")
    raw["models"] = [{**raw["models"][0], "pretrain_steps": 20}]
    raw["stages"]["intermediate"].update(steps=10, log_every=5)
    raw["stages"]["target"].update(steps=10, eval_every=5, log_every=5)
    raw["stages"]["eval"]["max_examples"] = 40
    spec = SweepSpec.model_validate(raw)
    return build_plan(spec, spec.models[0], {"lr_target": 3e-3, "lr_intermediate": 2e-3,
                                             "mixture": "english", "seed": 0})


def _rows(tmp_path, name):
    torch.set_num_threads(1)
    runner = TrialRunner(small_plan(), tmp_path / name, tmp_path / name / "sweep", "t0")
    summary = runner.run()
    rows = load(tmp_path / name / "sweep", "metrics").to_pylist()
    key = lambda r: (r["stage"], r["task"], r["language"], r["split"], r["metric"], r["step"] or 0)
    return summary, sorted(((key(r), r["value"], r["tokens"]) for r in rows), key=lambda x: x[0])


def test_same_config_same_numbers(tmp_path):
    a_summary, a = _rows(tmp_path, "a")
    b_summary, b = _rows(tmp_path, "b")
    assert len(a) > 20
    assert a == b
    assert a_summary["objective"] == b_summary["objective"]
    assert a_summary["zero_shot"] == b_summary["zero_shot"]
    stages = {k[0] for k, _, _ in a}
    assert stages == {"pretrain", "intermediate", "target", "eval"}
