"""`raysweep fit`: on a sweep's tables it writes the fits table and plots; it reads plain
CSV/Parquet results; bad input exits with status 2 and a message naming what is wrong."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from raysweep.analysis import core as analysis
from raysweep.analysis import scaling
from raysweep.cli.fit import FORM_NAMES, fit_command
from sweep_fixture import LRS, SweepTruth, write_sweep

CHINCHILLA_CSV = Path(__file__).resolve().parents[1].parent / "shared" / "data" / \
    "chinchilla_fig4_points.csv"

app = typer.Typer()
app.command("fit")(fit_command)


@app.command("version")  # a second command, so that `fit` is a subcommand as in raysweep.cli.app
def _version() -> None:
    pass


def run(*args: str):
    return CliRunner().invoke(app, ["fit", *map(str, args)], env={"COLUMNS": "160"})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> SweepTruth:
    return write_sweep(tmp_path_factory.mktemp("sweeps") / "demo")


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- a sweep ------------------------------------------------------------------------------------


def test_fit_on_a_sweep_writes_the_fits_table_and_plots(sweep, tmp_path):
    plot_dir = tmp_path / "plots"
    result = run(sweep.sweep_dir, "--n-boot", "50", "--plot", plot_dir)
    assert result.exit_code == 0, result.output
    assert "scaling fits" in result.stdout and "lr_law" in result.stdout

    table = pq.read_table(sweep.sweep_dir / "fits.parquet")
    rows = table.to_pylist()
    tasks = {"xnli", "pawsx", "xquad", "xtreme_r", "xtreme_r/classification", "xtreme_r/qa"}
    mixtures = {"none", "mnli", "squad", "xnli-mt"}
    # One row per group and form: (task x language=all x mixture) x (power_law, lr_law).
    assert len(rows) == len(tasks) * len(mixtures) * 2
    assert {(r["task"], r["language"], r["mixture"], r["form"]) for r in rows} == {
        (t, "all", m, f) for t in tasks for m in mixtures for f in ("power_law", "lr_law")}
    for column in ("n_points", "E", "E_lo", "E_hi", "alpha", "alpha_lo", "alpha_hi", "gamma",
                   "gamma_lo", "gamma_hi", "holdout_n_params", "holdout_pred", "holdout_true",
                   "holdout_abs_err", "holdout_rel_err"):
        assert column in table.column_names

    by_key = {(r["task"], r["mixture"], r["form"]): r for r in rows}
    for task in ("xnli", "pawsx", "xquad"):
        power = by_key[task, "none", "power_law"]
        # 5 sizes x 2 seeds, each the best of 3 learning rates by English dev score.
        assert power["n_points"] == 10 and power["target"] == "1 - score"
        assert power["alpha_lo"] <= power["alpha"] <= power["alpha_hi"]
        # The fixture's law, loosely: the best lr is off the true optimum by a size-dependent
        # amount, which bends the curve a little (test_scaling checks exact recovery).
        assert abs(power["alpha"] - sweep.task_laws[task][2]) < 0.1
        assert power["holdout_n_params"] == max(sweep.sizes.values())
        assert power["holdout_rel_err"] < 0.05
        lr = by_key[task, "none", "lr_law"]
        assert lr["gamma_lo"] <= sweep.lr_gamma <= lr["gamma_hi"]
        assert lr["holdout_rel_err"] < 0.3

    pngs = sorted(p.name for p in plot_dir.glob("*.png"))
    for name in ("power_law_task-xnli-language-all.png", "lr_law_task-xtreme_r-language-all.png",
                 "gain_heatmap.png", "gain_by_kind.png", "gain_by_language.png"):
        assert name in pngs
    assert all((plot_dir / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_sweep_points_follow_the_xtreme_protocol(sweep):
    points = analysis.load_points(sweep.sweep_dir)
    rows = points.table.to_pylist()
    assert points.lr_column == "lr_target"
    assert {r["lr"] for r in rows} == set(LRS)  # the crashed trial (lr 3e-3) is not read
    assert {r["language"] for r in rows} == {"all"}
    best = analysis.best_points(points, ["task", "language", "mixture"]).to_pylist()
    assert len(best) == 6 * 4 * 5 * 2  # tasks x mixtures x sizes x seeds
    for b in best[:20]:
        rivals = [r for r in rows if all(r[k] == b[k] for k in
                                         ("task", "mixture", "n_params", "seed"))]
        assert len(rivals) == len(LRS)
        assert b["select"] == max(r["select"] for r in rivals)  # chosen by English dev

    gains = analysis.gain_matrix(analysis.intermediate_gains(points))
    cell = {(m, t): gains.values[i, j] for i, m in enumerate(gains.rows)
            for j, t in enumerate(gains.columns)}
    assert "none" not in gains.rows
    assert cell["xnli-mt", "xnli"] > 0.02 and cell["squad", "xquad"] > 0.02


def test_fit_reads_all_languages_and_other_forms(sweep, tmp_path):
    out = tmp_path / "fits.parquet"
    result = run(sweep.sweep_dir, "--language", "de,sw", "--by", "task,language",
                 "--form", "power_law,bounded", "--chance", "0.3", "--n-boot", "20",
                 "--out", out)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out).to_pylist()
    assert {r["language"] for r in rows} == {"de", "sw"}
    bounded = [r for r in rows if r["form"] == "bounded"]
    assert bounded and all(0.3 <= r["ceiling"] <= 1 and r["chance"] == 0.3 for r in bounded)


# --- plain tables -------------------------------------------------------------------------------


def test_fit_reads_a_csv_with_group_columns(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"task": task, "n_params": n, "value": e + 30 * n**-0.3 + rng.normal(0, 0.002),
             "source": "paper"}
            for task, e in (("a", 1.5), ("b", 2.0)) for n in np.geomspace(1e7, 1e10, 6)]
    path = write_csv(tmp_path / "published.csv", rows)
    result = run(path, "--n-boot", "200")
    assert result.exit_code == 0, result.output
    fits = pq.read_table(tmp_path / "published.fits.parquet").to_pylist()
    assert [(r["task"], r["form"], r["target"]) for r in fits] == [
        ("a", "power_law", "value"), ("b", "power_law", "value")]
    for r, e in zip(fits, (1.5, 2.0)):
        assert r["E_lo"] <= e <= r["E_hi"]
        assert r["alpha_lo"] <= 0.3 <= r["alpha_hi"]
        assert r["holdout_n_params"] == pytest.approx(1e10)


def test_fit_two_step_from_a_table_with_tokens_and_task_loss(tmp_path):
    """The OLMo-ladder form from a table: loss from (N, D), accuracy from the loss."""
    rng = np.random.default_rng(1)
    rows = []
    for n in np.geomspace(1e7, 3e9, 6):
        for d in np.geomspace(1e9, 1e11, 5):
            loss = (1.7 + 400 * n**-0.34 + 410 * d**-0.28) * np.exp(rng.normal(0, 0.005))
            acc = 2.4 / (1 + np.exp(4.0 * (loss - 2.2))) + 0.25 + rng.normal(0, 0.005)
            rows.append({"n_params": n, "tokens": d, "loss": loss, "value": acc,
                         "metric": "accuracy"})
    path = write_csv(tmp_path / "ladder.csv", rows)
    result = run(path, "--form", "two_step", "--n-boot", "0")
    assert result.exit_code == 0, result.output
    (fit,) = pq.read_table(tmp_path / "ladder.fits.parquet").to_pylist()
    assert fit["form"] == "two_step" and fit["n_points"] == 30
    assert fit["alpha"] == pytest.approx(0.34, abs=0.05) and fit["k"] == pytest.approx(-4, rel=0.2)
    assert fit["holdout_rel_err"] < 0.05


def test_fit_reproduces_the_published_chinchilla_fit_from_a_table(tmp_path):
    if not CHINCHILLA_CSV.exists():
        pytest.skip(f"{CHINCHILLA_CSV} is absent (CI clones the repo with shared/ beside it)")
    with open(CHINCHILLA_CSV, newline="") as f:
        source = list(csv.DictReader(f))
    rows = [{"n_params": r["Model Size"], "flops": r["Training FLOP"], "value": r["loss"],
             "metric": "loss"} for r in source]
    worst = sorted(float(r["value"]) for r in rows)[-5]
    rows = [r for r in rows if float(r["value"]) < worst]  # Epoch's outlier rule: keep 240
    path = write_csv(tmp_path / "chinchilla.csv", rows)
    result = run(path, "--form", "chinchilla", "--n-boot", "0", "--out", tmp_path / "fits.pq")
    assert result.exit_code == 0, result.output
    (fit,) = pq.read_table(tmp_path / "fits.pq").to_pylist()
    assert fit["n_points"] == 240 and fit["metric"] == "loss"
    for name, value, se in (("E", 1.817, 0.026), ("alpha", 0.348, 0.015), ("beta", 0.366, 0.021)):
        assert abs(fit[name] - value) <= se


def test_the_help_lists_every_form():
    assert set(FORM_NAMES) == set(scaling.FORMS)
    result = CliRunner().invoke(app, ["fit", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and all(name in result.stdout for name in FORM_NAMES)


# --- bad input ----------------------------------------------------------------------------------


def bad(tmp_path: Path, case: str, sweep: SweepTruth) -> tuple[list, list[str]]:
    """(arguments, fragments the message must contain) for each kind of bad input."""
    table = [{"n_params": n, "value": 3.0 - 0.1 * np.log10(n)} for n in (1e8, 1e9, 1e9)]
    if case == "sweep without results":
        (tmp_path / "empty" / "metrics").mkdir(parents=True)
        return [tmp_path / "empty"], [str(tmp_path / "empty" / "metrics"), "no results"]
    if case == "metric not there":
        return [sweep.sweep_dir, "--metric", "bleu"], [
            str(sweep.sweep_dir / "metrics"), "column 'metric'", "'bleu'", "allowed:", "score"]
    if case == "fewer points than parameters":
        path = write_csv(tmp_path / "two_sizes.csv", table)
        return [path], [str(path), "n_params", "power_law", "3 parameters",
                        "3 or more distinct sizes N; got 2"]
    if case == "fewer sizes in a sweep":
        small = write_sweep(tmp_path / "small", sizes={"tiny": 10_000_000, "xl": 10**9},
                            seeds=(0,))
        return [small.sweep_dir, "--form", "power_law"], [str(small.sweep_dir), "task=",
                                                          "got 2"]
    if case == "table without a value column":
        path = write_csv(tmp_path / "no_value.csv", [{"n_params": 1e8, "loss": 3.0}])
        return [path], [str(path), "value", "needs n_params, value", "it has n_params, loss"]
    if case == "unknown group column":
        return [sweep.sweep_dir, "--by", "task,planet"], ["'planet'", "allowed:", "mixture"]
    if case == "unknown form":
        return [sweep.sweep_dir, "--form", "cubic"], ["'cubic'", "allowed:", "power_law",
                                                      "chinchilla", "lr_law"]
    if case == "bounded form on a loss":
        path = write_csv(tmp_path / "loss.csv", table)
        return [path, "--form", "bounded"], ["bounded", "accuracy-like", "'value'"]
    if case == "no such path":
        return [tmp_path / "nowhere"], [str(tmp_path / "nowhere"), "no such"]
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "sweep without results", "metric not there", "fewer points than parameters",
    "fewer sizes in a sweep", "table without a value column", "unknown group column",
    "unknown form", "bounded form on a loss", "no such path",
])
def test_bad_input_exits_2_with_a_message_naming_the_problem(case, sweep, tmp_path):
    args, fragments = bad(tmp_path, case, sweep)
    result = run(*args, "--n-boot", "10")
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())  # rich/terminal wrapping aside
    assert message.startswith("error: ")
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in result.output
