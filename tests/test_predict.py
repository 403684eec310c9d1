"""`raysweep predict`: prediction intervals cover new observations of a known law as often as
they claim, the backtest rule widens them only after a miss, the command prints and writes JSON
and nothing else, bad input exits 2, and a backtest on public numbers (mT5 on XTREME) lands
where the README says."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from raysweep.analysis import scaling
from raysweep.analysis.fits import fit_groups
from raysweep.analysis.points import PointTable, load_points
from raysweep.analysis.predict import predict
from raysweep.analysis.scaling import Backtest, widen
from raysweep.cli.fit import fit_command
from raysweep.cli.predict import predict_command
from test_fit_cli import write_csv
from test_scaling import POWER_NOISE, POWER_TRUTH, power_law_draw

PUBLIC = Path(__file__).resolve().parent / "fixtures" / "public" / "mt5_xtreme_zero_shot.csv"

app = typer.Typer()
app.command("predict")(predict_command)
app.command("fit")(fit_command)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def files_under(path: Path) -> set[Path]:
    return set(path.rglob("*"))


# --- coverage on a known law --------------------------------------------------------------------


def test_95_percent_prediction_intervals_cover_new_observations_of_a_known_law():
    """200 draws of 8 sizes x 3 seeds of a known power law; each time the 95% interval at 3x the
    largest size, after the backtest rule, against a new observation there. This is the
    computation `raysweep.analysis.predict.predict` does for a group (checked against it
    below), on the numerics directly so that 200 fits stay fast: a coarser alpha search (31
    grid points, 20 golden steps: alpha to ~1e-5, against a standard error of 2e-3)."""
    form = scaling.PowerLaw(grid_size=31, refine_steps=20)
    rng = np.random.default_rng(13)
    target = 3e10
    e, a, alpha = POWER_TRUTH.values()
    truth = e + a * target**-alpha
    draws, covered, widened = 200, 0, 0
    for seed in range(draws):
        points = power_law_draw(rng)
        fit = scaling.fit(form, points, n_boot=100, seed=seed, holdout=False)
        back = scaling.backtest(form, points, n_boot=100, seed=seed)
        forecast = widen(*scaling.interval(fit, [target], seed=seed), target, back)
        new = truth + rng.normal(0, POWER_NOISE)
        covered += forecast.lo <= new <= forecast.hi
        widened += forecast.widen > 0
    # Measured 0.95-0.96 over 400 draws (0.92 before the sqrt(n / (n - p)) correction); 0.90
    # is 2.5 binomial standard deviations (0.015 each at 200 draws) below 0.95.
    assert covered / draws >= 0.90, (covered, widened)


def accuracy_table(rng: np.random.Generator, scale: float = 1.0) -> list[dict]:
    """An accuracy that rises as 1 - (E + A N^-alpha), 6 sizes x 2 seeds, in two tasks."""
    rows = []
    for task, e in (("a", 0.15), ("b", 0.25)):
        for n in np.repeat(np.geomspace(1e7, 1e10, 6), 2):
            error = e + 30.0 * n**-0.3 + rng.normal(0, 0.003)
            rows.append({"task": task, "n_params": n, "value": scale * (1 - error)})
    return rows


def test_predict_is_the_interval_rule_mapped_back_to_the_metric():
    rows = [r for r in accuracy_table(np.random.default_rng(0)) if r["task"] == "a"]
    points = PointTable(pa.Table.from_pylist(rows), Path("synthetic.csv"), "table", "accuracy",
                        ("task",))
    fits = fit_groups(points, forms=["power_law"], n_boot=100, seed=3)
    (group,) = fits.groups
    (p,) = predict(fits.groups, 3e10, seed=3)
    assert group.target == "1 - accuracy"
    back = scaling.backtest(group.fit.form, group.data, n_boot=100, seed=3)
    expected = widen(*scaling.interval(group.fit, [3e10], seed=3), 3e10, back)
    assert p.forecast == expected
    assert p.value == pytest.approx(1 - expected.pred)
    assert p.interval == pytest.approx((1 - expected.hi, 1 - expected.lo))


# --- the backtest rule ----------------------------------------------------------------------------


def test_the_backtest_rule_widens_only_after_a_miss_and_by_the_miss():
    covered = Backtest(1e9, 1e8, 1, pred=0.30, lo=0.28, hi=0.32, true=0.31)
    missed = Backtest(1e9, 1e8, 1, pred=0.30, lo=0.29, hi=0.31, true=0.34)
    kept = widen(0.20, 0.19, 0.22, 1e10, covered)
    assert (kept.lo, kept.hi, kept.widen) == (0.19, 0.22, 0.0)
    # One backtest step further out (1e9 -> 1e10, as 1e8 -> 1e9): the miss itself, 0.04, is
    # added in quadrature to each half-width; two steps out, twice the miss.
    one = widen(0.20, 0.19, 0.22, 1e10, missed)
    assert one.widen == pytest.approx(0.04)
    assert one.lo == pytest.approx(0.20 - np.hypot(0.01, 0.04))
    assert one.hi == pytest.approx(0.20 + np.hypot(0.02, 0.04))
    assert (one.raw_lo, one.raw_hi) == (0.19, 0.22)
    assert widen(0.20, 0.19, 0.22, 1e11, missed).widen == pytest.approx(0.08)
    # Not beyond the largest fitted size, or no backtest: nothing to carry forward.
    assert widen(0.20, 0.19, 0.22, 1e9, missed).widen == 0.0
    assert widen(0.20, 0.19, 0.22, 1e10, None).widen == 0.0
    # A backtest without an interval (no bootstrap) shows nothing is enough: widened.
    blind = Backtest(1e9, 1e8, 1, pred=0.30, lo=np.nan, hi=np.nan, true=0.31)
    assert widen(0.20, 0.19, 0.22, 1e10, blind).widen == pytest.approx(0.01)


# --- the command ----------------------------------------------------------------------------------


def test_predict_prints_each_group_writes_json_and_nothing_else(tmp_path):
    path = write_csv(tmp_path / "acc.csv", accuracy_table(np.random.default_rng(1), 100.0))
    before = files_under(tmp_path)
    result = run("predict", path, "--n-params", "3e10", "--n-boot", "100")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    assert "predicted at N = 3e+10" in out and "task=a" in out and "task=b" in out
    assert "(100 - value)" in out and "holdout coverage:" in out

    result = run("predict", path, "--n-params", "3e10", "--n-boot", "100", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_params"] == 3e10 and data["level"] == 0.95
    assert [p["group"] for p in data["predictions"]] == [{"task": "a"}, {"task": "b"}]
    fits = fit_groups(load_points(path), forms=["power_law"], n_boot=100)
    for entry, expected in zip(data["predictions"], predict(fits.groups, 3e10)):
        assert entry["target"] == "100 - value" and entry["direction"] == "rising"
        assert entry["lo"] <= entry["pred"] <= entry["hi"] <= 100.0
        assert entry["pred"] == pytest.approx(expected.value)
        assert (entry["lo"], entry["hi"]) == pytest.approx(expected.interval)
        assert entry["fit_flags"] == [] and set(entry["params"]) == {"E", "A", "alpha"}
        holdout = entry["holdout"]
        assert holdout["n_params"] == 1e10 and holdout["lo"] <= holdout["pred"] <= holdout["hi"]
        assert holdout["covered"] == (holdout["lo"] <= holdout["true"] <= holdout["hi"])
    coverage = data["holdout_coverage"]
    assert coverage["fits"] == 2
    assert coverage["covered"] == sum(e["holdout"]["covered"] for e in data["predictions"])
    assert files_under(tmp_path) == before  # predict writes nothing


def test_a_backtest_miss_widens_the_printed_interval(tmp_path):
    """A law whose largest size jumps above the trend: the backtest (the others predicting it)
    misses, so the forecast beyond is widened by that miss, as the JSON's own numbers say."""
    rng = np.random.default_rng(2)
    sizes = np.geomspace(1e7, 1e10, 7)
    rows = [{"n_params": n, "value": 1 - (0.15 + 30.0 * n**-0.3) + rng.normal(0, 0.002)
             + (0.05 if n == sizes[-1] else 0.0)} for n in sizes]
    path = write_csv(tmp_path / "jump.csv", rows)
    result = run("predict", path, "--n-params", "1e11", "--n-boot", "100", "--json")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.stdout)["predictions"]
    back = entry["backtest"]
    assert not back["covered"] and back["true"] > back["hi"]
    step = np.log(back["n_params"] / back["n_prev"])
    miss = abs(back["true"] - back["pred"])
    assert entry["widened_by"] == pytest.approx(miss * np.log(1e11 / 1e10) / step)
    assert entry["hi"] - entry["lo"] > entry["raw_hi"] - entry["raw_lo"]
    result = run("predict", path, "--n-params", "1e11", "--n-boot", "100")
    assert "widened from" in " ".join(result.stdout.split())


# --- bad input ------------------------------------------------------------------------------------


def bad(tmp_path: Path, case: str) -> tuple[list, list[str]]:
    """(arguments, fragments the message must contain) for each kind of bad input."""
    rows = accuracy_table(np.random.default_rng(4))
    if case == "fewer sizes than parameters":
        path = write_csv(tmp_path / "two.csv", [r for r in rows if r["n_params"] < 5e7])
        return [path, "--n-params", "1e11"], [str(path), "task=a", "power_law",
                                              "3 parameters", "3 or more distinct sizes N; got 2"]
    path = write_csv(tmp_path / "acc.csv", rows)
    if case == "below the smallest fitted size":
        return [path, "--n-params", "1e6"], ["--n-params 1e+06",
                                             "below the smallest fitted size (1e+07)",
                                             "--allow-interpolation"]
    if case == "unknown group column":
        return [path, "--n-params", "1e11", "--by", "planet"], ["'planet'", "allowed:", "task"]
    if case == "mixed metrics":
        mixed = write_csv(tmp_path / "mixed.csv", [
            {**r, "metric": "accuracy" if i % 2 else "f1"} for i, r in enumerate(rows)])
        return [mixed, "--n-params", "1e11"], [str(mixed), "several metrics", "pass --metric",
                                               "accuracy, f1"]
    if case == "lr law":
        return [path, "--n-params", "1e11", "--form", "lr_law"], ["lr_law",
                                                                  "learning rate", "power_law"]
    if case == "(N, D) form without tokens":
        return [path, "--n-params", "1e11", "--form", "chinchilla"], ["'chinchilla'",
                                                                      "pass --tokens"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "fewer sizes than parameters", "below the smallest fitted size", "unknown group column",
    "mixed metrics", "lr law", "(N, D) form without tokens",
])
def test_bad_input_exits_2_with_a_message_and_writes_nothing(case, tmp_path):
    args, fragments = bad(tmp_path, case)
    before = files_under(tmp_path)
    result = run("predict", *args, "--n-boot", "20")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert result.stdout == "" and "Traceback" not in result.output
    assert files_under(tmp_path) == before


def test_interpolation_is_refused_inside_the_fitted_sizes_unless_allowed(tmp_path):
    path = write_csv(tmp_path / "acc.csv", accuracy_table(np.random.default_rng(5)))
    result = run("predict", path, "--n-params", "1e9", "--n-boot", "20")
    assert result.exit_code == 2
    assert "within the fitted sizes (1e+07 to 1e+10)" in " ".join(result.stderr.split())
    result = run("predict", path, "--n-params", "1e9", "--n-boot", "20", "--allow-interpolation",
                 "--json")
    assert result.exit_code == 0, result.output
    for entry in json.loads(result.stdout)["predictions"]:
        assert entry["widened_by"] == 0.0  # the rule carries misses forward, not inward


# --- a backtest on public numbers: mT5 on XTREME --------------------------------------------------

# The figures the README's backtest paragraph reports: mean absolute error at mT5-XXL, in
# points, predicted from Small..XL by `raysweep fit` (the holdout columns) or, the same numbers,
# `raysweep predict --n-params 13e9` on the four smaller sizes.
README_MAE = 1.05  # all six tasks
README_ACCURACY_MAE = 0.48  # XNLI and PAWS-X, the accuracies


def test_the_mt5_backtest_covers_the_published_xxl_scores(tmp_path):
    with open(PUBLIC, newline="") as f:
        table = list(csv.DictReader(f))
    largest = max(float(r["n_params"]) for r in table)
    published = {r["task"]: float(r["value"]) for r in table if float(r["n_params"]) == largest}
    assert len(published) == 6 and largest == 13e9

    out = tmp_path / "mt5.fits.parquet"
    result = run("fit", PUBLIC, "--out", out)
    assert result.exit_code == 0, result.output
    assert "in 6 of 6 fits (100%)" in " ".join(result.stdout.split())
    errors = {}
    for r in pq.read_table(out).to_pylist():
        assert r["target"] == "100 - score" and r["holdout_n_params"] == largest
        assert r["holdout_true"] == pytest.approx(100 - published[r["task"]])
        pred, lo, hi = (100 - r[c] for c in ("holdout_pred", "holdout_pred_hi",
                                             "holdout_pred_lo"))
        # The published score lies within the interval the four smaller sizes gave.
        assert lo <= published[r["task"]] <= hi, (r["task"], lo, published[r["task"]], hi)
        assert r["holdout_covered"] and hi <= 100.0  # clipped at the ceiling (xquad's is)
        errors[r["task"]] = abs(pred - published[r["task"]])
    assert round(float(np.mean(list(errors.values()))), 2) == README_MAE, errors
    accuracy = np.mean([errors["xnli"], errors["pawsx"]])
    assert accuracy <= 1.0 and round(float(accuracy), 2) == README_ACCURACY_MAE

    # `raysweep predict` before XXL existed says the same.
    smaller = write_csv(tmp_path / "mt5_smaller.csv",
                        [r for r in table if float(r["n_params"]) < largest])
    result = run("predict", smaller, "--n-params", "13e9", "--json")
    assert result.exit_code == 0, result.output
    fits = {r["task"]: r for r in pq.read_table(out).to_pylist()}
    for entry in json.loads(result.stdout)["predictions"]:
        r = fits[entry["group"]["task"]]
        assert entry["pred"] == pytest.approx(100 - r["holdout_pred"])
        assert (entry["lo"], entry["hi"]) == pytest.approx((100 - r["holdout_pred_hi"],
                                                            100 - r["holdout_pred_lo"]))
