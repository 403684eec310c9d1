"""`raysweep fit`: scaling-law fits of a sweep's results (or a published table), per group.

Registered by the main app as `app.command("fit")(fit_command)`. Bad input (no results, a
metric or column that is not there, too few points for a form) prints one message naming the
file, the column or key and what is allowed, and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

# The names of raysweep.analysis.scaling.FORMS, spelled out so that importing this module (which every
# `raysweep` command does) does not import scipy; a test keeps the two in step.
FORM_NAMES = ("power_law", "chinchilla", "two_step", "bounded", "lr_law")


def _split_list(values: Optional[List[str]]) -> Optional[list[str]]:
    """Accept both `--form a --form b` and `--form a,b`."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def fit_command(
    source: Path = typer.Argument(
        ..., help="A sweep directory (metrics/*.parquet), or a .csv/.parquet table with "
                  "n_params and value columns (optional: tokens or flops, loss, lr, metric, and "
                  "group columns).", show_default=False),
    metric: Optional[str] = typer.Option(
        None, "--metric", "-m", help="Metric to fit. Sweep default: score (eval/test rows); "
                                     "a table: its metric column, or its values as they are."),
    by: Optional[str] = typer.Option(
        None, "--by", help="Comma-separated group columns. Default: task,language,mixture "
                           "(those present)."),
    form: Optional[List[str]] = typer.Option(
        None, "--form", "-f", help=f"Forms to fit, repeated or comma-separated: "
                                   f"{', '.join(FORM_NAMES)}. Default: power_law and lr_law "
                                   f"for a sweep, power_law for a table."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Where to write the fits table (Parquet). Default: "
                                  "<sweep>/fits.parquet, or <table>.fits.parquet beside a table."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG plots to this directory."),
    stage: str = typer.Option("eval", help="Sweep rows: stage (eval, pretrain, target, ...)."),
    split: str = typer.Option("test", help="Sweep rows: split (test, validation, train)."),
    language: Optional[str] = typer.Option(
        None, help="Sweep rows: comma-separated languages to keep, or 'any'. Default: 'all' "
                   "(the mean over non-English languages) for eval rows, 'any' otherwise."),
    all_steps: bool = typer.Option(
        False, "--all-steps", help="Every logged step is a point (training curves, for the "
                                   "(N, D) forms), not only each trial's last."),
    chance: Optional[float] = typer.Option(
        None, help="Chance level for the bounded form. Default: 1/k for a registered k-way "
                   "classification task, else 0."),
    n_boot: int = typer.Option(1000, "--n-boot", min=0, help="Bootstrap resamples (0: none)."),
    level: float = typer.Option(0.95, min=0.5, max=0.999, help="Confidence level."),
    seed: int = typer.Option(0, help="Seed of the bootstrap resampling."),
) -> None:
    """Fit scaling laws per group, write the fits table, print a summary (and plots)."""
    # Imported here so that other `raysweep` commands do not pay for scipy and matplotlib.
    from raysweep.console import make_console

    from raysweep.analysis import core as analysis

    if language is None:
        language = "all" if stage == "eval" else "any"
    selection = analysis.Selection(
        metric=metric, stage=stage, split=split,
        languages=None if language == "any" else tuple(language.split(",")),
        all_steps=all_steps,
    )
    try:
        points = analysis.load_points(source, selection)
        by_columns = _split_list([by]) if by else None
        fits = analysis.fit_groups(points, forms=_split_list(form), by=by_columns,
                                   chance=chance, n_boot=n_boot, level=level, seed=seed)
        table = analysis.fits_table(fits.groups, source=points.source)
        path = analysis.write_fits(table, out or analysis.default_fits_path(points))
    except analysis.InputError as err:
        raise _fail(str(err)) from None

    console = make_console()
    console.print(analysis.summary_table(fits.groups, title=f"scaling fits: {points.source}"))
    for note in fits.skipped:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"wrote {table.num_rows} fits to {path}")

    if plot is not None:
        from raysweep.analysis import plots

        every_language = None  # the gain plots compare zero-shot eval scores across mixtures
        try:
            if points.kind == "sweep" and stage == "eval":
                every_language = analysis.load_points(
                    source, analysis.Selection(metric=metric, stage=stage, split=split,
                                               languages=None, all_steps=all_steps))
            written = plots.write_plots(fits.groups, plot, every_language)
        except analysis.InputError as err:
            raise _fail(str(err)) from None
        console.print(f"wrote {len(written)} plots to {plot}")
