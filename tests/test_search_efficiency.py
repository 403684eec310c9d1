"""The replay logic of bench/search_efficiency.py on small hand-made tables: cost accounting,
ASHA stopping (against Ray's own bracket), stage sharing, the within-tolerance stopping rule and
the ladder's narrowing. No Ray cluster, no training."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("search_efficiency",
                                               ROOT / "bench" / "search_efficiency.py")
se = importlib.util.module_from_spec(_spec)
sys.modules["search_efficiency"] = se  # dataclasses look their module up by name
_spec.loader.exec_module(se)

LI, LT = (1e-3, 4e-3), (1e-4, 1e-3)
TFLOPS = (10.0, 20.0, 30.0)  # cumulative target FLOPs at each rung
IFLOPS = 100.0


def row(mix, li, lt, devs, key=None):
    return [{"model": "m", "n_params": 1000, "mixture": mix, "lr_intermediate": li,
             "lr_target": lt, "rung": i + 1, "dev": d, "target_flops": TFLOPS[i],
             "inter_key": key or (f"{mix}-{li}" if li else ""),
             "inter_flops": IFLOPS if li else 0.0, "pretrain_flops": 7.0}
            for i, d in enumerate(devs)]


def table(best=(0.9, 0.9, 0.9)) -> se.Table:
    rows = [*row("none", None, 1e-4, (0.5, 0.5, 0.5)), *row("none", None, 1e-3, (0.6, 0.6, 0.6)),
            *row("en", 1e-3, 1e-4, (0.4, 0.4, 0.4)), *row("en", 1e-3, 1e-3, best),
            *row("en", 4e-3, 1e-4, (0.3, 0.3, 0.3)), *row("en", 4e-3, 1e-3, (0.7, 0.7, 0.7))]
    return se.Table.from_rows(rows)


def test_table_best_and_grid_compute():
    t = table()
    assert t.best == 0.9 and t.best_config() == ("en", 1e-3, 1e-3)
    # 6 full targets, 2 distinct intermediate stages (each paid once), pretraining apart.
    assert t.grid_compute == 6 * 30.0 + 2 * IFLOPS
    assert t.pretrain_flops == 7.0 and t.lr_intermediate == LI and t.lr_target == LT


def test_lookup_snaps_in_log_space_and_ignores_lr_i_without_intermediate():
    t = table()
    # The log midpoints: 2e-3 between the LI points, 3.16e-4 between the LT points.
    assert t.lookup("en", 1.9e-3, 3.3e-4)[0] == ("en", 1e-3, 1e-3)
    assert t.lookup("en", 2.1e-3, 3.0e-4)[0] == ("en", 4e-3, 1e-4)
    assert t.lookup("none", 4e-3, 1e-4)[0] == ("none", None, 1e-4)
    lo, hi = se.cell_range(LT)
    assert math.isclose(math.log(1e-4 / lo), math.log(hi / 1e-3))  # equal end cells
    assert math.isclose(math.log(hi / lo), 2 * math.log(1e-3 / 1e-4))


def test_asha_matches_rays_bracket():
    """Our ASHA decides as Ray's own _Bracket (raysweep's settings) on random result streams."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    class T:
        def __init__(self, i):
            self.trial_id = str(i)

    rng = random.Random(0)
    for _ in range(20):
        ours, ray_b = se.Asha(), _Bracket(se.GRACE, se.MAX_T, se.RF, 0)
        for i in range(15):
            for it in range(1, 4):
                score = round(rng.random(), 2)
                stop = ours.on_result(str(i), it, score)
                assert stop == (ray_b.on_result(T(i), it, score) == "STOP")
                if stop:
                    break


def test_asha_stops_below_the_median_at_a_milestone():
    a = se.Asha()
    assert not a.on_result("0", 1, 0.5)  # nothing recorded yet: never stop
    assert a.on_result("1", 1, 0.4)  # below the median of {0.5}
    assert not a.on_result("2", 1, 0.6)
    assert not a.on_result("2", 2, 0.1)  # first result at rung 2: nothing recorded there


def scripted_replay(monkeypatch, t, method, configs, **kw):
    """Replay with the sampler's draws scripted (the cost rules under test, not TPE)."""
    import optuna

    draws = iter(configs)

    def ask(self, dists=None):
        mix, li, lt = next(draws)
        params = {"mixture": mix, "lr_intermediate": li or LI[0], "lr_target": lt}
        return SimpleNamespace(params=params)
    monkeypatch.setattr(optuna.study.Study, "ask", ask)
    monkeypatch.setattr(optuna.study.Study, "tell", lambda self, trial, value: None)
    return se.replay(t, method, 0, **kw)


def test_stage_aware_pays_an_intermediate_once_continuous_every_time(monkeypatch):
    t = table(best=(0.1, 0.1, 0.1))  # the best is elsewhere
    seq = [("en", 4e-3, 1e-4), ("en", 4e-3, 1e-4), ("en", 1e-3, 1e-3)]
    shared = scripted_replay(monkeypatch, t, se.Method(True, False), seq, max_trials=3)
    assert shared.inter_paid == 2 and shared.compute == 2 * IFLOPS + 3 * 30.0
    alone = scripted_replay(monkeypatch, t, se.Method(False, False), seq, max_trials=3)
    assert alone.inter_paid == 3 and alone.compute == 3 * IFLOPS + 3 * 30.0
    assert not shared.landed and not alone.landed


def test_lands_on_the_first_finished_trial_within_tolerance(monkeypatch):
    t = table(best=(0.9, 0.9, 0.9))
    seq = [("none", None, 1e-3), ("en", 1e-3, 1e-3), ("en", 4e-3, 1e-3)]
    out = scripted_replay(monkeypatch, t, se.Method(True, False), seq)
    assert out.landed and out.trials == 2 and out.found == ("en", 1e-3, 1e-3)
    assert out.compute == 30.0 + IFLOPS + 30.0
    # Within 0.5 points counts; just outside does not.
    near = table(best=(0.9, 0.9, 0.9))
    near.entries[("none", None, 1e-3)] = se.Entry((0.896,) * 3, TFLOPS, "", 0.0)
    assert scripted_replay(monkeypatch, near, se.Method(True, False), seq).trials == 1
    near.entries[("none", None, 1e-3)] = se.Entry((0.894,) * 3, TFLOPS, "", 0.0)
    assert scripted_replay(monkeypatch, near, se.Method(True, False), seq).trials == 2


def test_a_stopped_trial_pays_its_steps_and_is_never_found(monkeypatch):
    t = table()
    # The best config looks bad at rung 1, so ASHA stops it: it cannot count as found.
    t.entries[("en", 1e-3, 1e-3)] = se.Entry((0.1, 0.9, 0.9), TFLOPS, "en-0.001", IFLOPS)
    seq = [("none", None, 1e-3), ("en", 1e-3, 1e-3), ("none", None, 1e-4)]
    out = scripted_replay(monkeypatch, t, se.Method(True, True), seq, max_trials=3)
    # Trial 2 stops at rung 1 (0.1 < median 0.6); trial 3 passes rung 1 (0.5 > median of
    # {0.6, 0.1}) and stops at rung 2 (0.5 < 0.6, the only score recorded there).
    assert out.stopped == 2 and not out.landed
    assert [ran for _, ran, _ in out.log] == [3, 1, 2]
    assert out.compute == 30.0 + (IFLOPS + 10.0) + 20.0


def test_ladder_narrows_with_raysweeps_rule_and_evaluates_the_prediction_first():
    t = table()
    # Two smaller sizes whose best lr_target halves per decade of N: lr*(1000) = 1e-3.
    finished = ((10, {"lr_target": 4e-3, "lr_intermediate": 1e-3}),
                (100, {"lr_target": 2e-3, "lr_intermediate": 1e-3}))
    params, first = se.ladder_space(t, se.Method(True, True, finished))
    lo, hi = params["lr_target"].loguniform
    assert math.isclose(lo, 1e-3 / se.NARROW) and math.isclose(hi, 1e-3 * se.NARROW)
    assert params["lr_intermediate"].values == [1e-3]  # 4e-3 is outside [lr*/3, 3 lr*]
    assert first[0]["lr_target"] == pytest.approx(1e-3) and first[0]["lr_intermediate"] == 1e-3
    plain, none = se.ladder_space(t, se.Method(True, True))
    assert none == [] and plain["lr_intermediate"].values == list(LI)


def test_real_tpe_replay_is_seeded_and_lands():
    t = table()
    a = se.replay(t, se.Method(True, True), 3)
    b = se.replay(t, se.Method(True, True), 3)
    assert a.log == b.log and a.landed and a.found == ("en", 1e-3, 1e-3)
