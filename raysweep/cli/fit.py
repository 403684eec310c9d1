"""`raysweep fit`: scaling-law fits of a sweep's results (or a published table), per group.

Registered by the main app as `app.command("fit")(fit_command)`. Bad input (no results, a
metric or column that is not there, too few points for a form, a metric whose direction cannot
be told, a form that cannot describe it) prints one message naming the file, the column or key
and what is allowed, and exits with status 2. The options `raysweep predict` shares with `fit`
are defined here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

# The names of raysweep.analysis.scaling.FORMS, spelled out so that importing this module (which
# every `raysweep` command does) does not import scipy; a test keeps the two in step.
FORM_NAMES = ("power_law", "chinchilla", "two_step", "bounded", "lr_law")


def split_list(values: Optional[List[str]]) -> Optional[list[str]]:
    """Accept both `--form a --form b` and `--form a,b`."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def input_error(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


SOURCE = typer.Argument(
    ..., help="A sweep directory (metrics/*.parquet; a path or a URI such as s3://bucket/runs/"
              "NAME), or a local .csv/.parquet table with "
              "n_params and value columns (optional: tokens or flops, loss, lr, metric, and "
              "group columns).", show_default=False)
METRIC = typer.Option(
    None, "--metric", "-m", help="Metric to fit. Sweep default: score (eval/test rows); "
                                 "a table: its metric column, or its values as they are.")
BY = typer.Option(None, "--by", help="Comma-separated group columns. Default: "
                                     "task,language,mixture (those present).")
DIRECTION = typer.Option(
    None, "--direction", help="rising or falling: which way the metric goes with size. "
                              "Default: from the metric's name (accuracy-like rise, losses "
                              "fall), else from the data's own trend.")
CEILING = typer.Option(
    None, "--ceiling", help="The most a rising metric can reach; it is fitted as its gap to "
                            "this. Default: 1 for values in [0, 1], 100 for percentages.")
STAGE = typer.Option("eval", help="Sweep rows: stage (eval, pretrain, target, ...).")
SPLIT = typer.Option("test", help="Sweep rows: split (test, validation, train).")
LANGUAGE = typer.Option(
    None, help="Sweep rows: comma-separated languages to keep, or 'any'. Default: 'all' (the "
               "mean over non-English languages) for eval rows, 'any' otherwise.")
CHANCE = typer.Option(
    None, help="Chance level for the bounded form, on the [0, 1] scale. Default: 1/k for a "
               "registered k-way classification task, else 0.")
N_BOOT = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples (0: none).")
LEVEL = typer.Option(0.95, min=0.5, max=0.999, help="Level of the confidence and prediction "
                                                    "intervals.")
SEED = typer.Option(0, help="Seed of the bootstrap resampling.")


def load_selected(source: str, metric: str | None, stage: str, split: str,
                  language: str | None, all_steps: bool = False):
    """The points of a sweep or table, as `--metric/--stage/--split/--language` select them.
    Raises InputError."""
    from raysweep.analysis.points import Selection, load_points

    if language is None:
        language = "all" if stage == "eval" else "any"
    return load_points(source, Selection(
        metric=metric, stage=stage, split=split, all_steps=all_steps,
        languages=None if language == "any" else tuple(language.split(","))))


def fit_command(
    source: str = SOURCE,
    metric: Optional[str] = METRIC,
    by: Optional[str] = BY,
    form: Optional[List[str]] = typer.Option(
        None, "--form", "-f", help=f"Forms to fit, repeated or comma-separated: "
                                   f"{', '.join(FORM_NAMES)}. Default: power_law and lr_law "
                                   f"for a sweep, power_law for a table."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Where to write the fits table (Parquet). Default: "
                                  "<sweep>/fits.parquet, or <table>.fits.parquet beside a table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG plots to this directory."),
    stage: str = STAGE,
    split: str = SPLIT,
    language: Optional[str] = LANGUAGE,
    all_steps: bool = typer.Option(
        False, "--all-steps", help="Every logged step is a point (training curves, for the "
                                   "(N, D) forms), not only each trial's last."),
    direction: Optional[str] = DIRECTION,
    ceiling: Optional[float] = CEILING,
    chance: Optional[float] = CHANCE,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = SEED,
) -> None:
    """Fit scaling laws per group, write the fits table, print a summary (and plots)."""
    # Imported here so that other `raysweep` commands do not pay for scipy and matplotlib.
    from raysweep.console import make_console

    from raysweep.analysis.fits import default_fits_path, fit_groups, fits_table, write_table
    from raysweep.analysis.gains import gains_path, intermediate_gains
    from raysweep.analysis.points import InputError
    from raysweep.analysis.summary import fit_notes, summary_table

    notes, gains = [], None
    try:
        points = load_selected(source, metric, stage, split, language, all_steps)
        by_columns = split_list([by]) if by else None
        fits = fit_groups(points, forms=split_list(form), by=by_columns, chance=chance,
                          n_boot=n_boot, level=level, seed=seed, direction=direction,
                          ceiling=ceiling)
        table = fits_table(fits.groups, source=points.source)
        path = out or default_fits_path(points)  # a Location for a sweep given by URI
        write_table(table, path)
        # The gains compare zero-shot eval scores across mixtures, in every language.
        if points.kind == "sweep" and stage == "eval":
            try:
                gains = intermediate_gains(load_selected(source, metric, stage, split, "any",
                                                         all_steps))
            except InputError as err:  # no baseline mixture: a sweep without gains to show
                notes.append(f"no gains table: {err}")
            else:
                write_table(gains, gains_path(path), "gains")
    except InputError as err:
        raise input_error(str(err)) from None

    console = make_console()
    console.print(summary_table(fits.groups, title=f"scaling fits: {points.source}"))
    for note in (*fit_notes(fits.groups), *fits.skipped, *notes):
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"wrote {table.num_rows} fits to {path}")
    if gains is not None:
        console.print(f"wrote {gains.num_rows} gains to {gains_path(path)}")

    if plot is not None:
        from raysweep.analysis import plots

        try:
            written = plots.write_plots(fits.groups, plot, gains)
        except InputError as err:
            raise input_error(str(err)) from None
        console.print(f"wrote {len(written)} plots to {plot}")
