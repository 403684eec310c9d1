"""`raysweep predict`: the metric at a model size not trained yet, per group, with a prediction
interval (`raysweep.analysis.predict`).

Registered by the main app as `app.command("predict")(predict_command)`. It reads what
`raysweep fit` reads, fits one form per group, and prints (or with --json writes to stdout)
the prediction; it writes no file. Bad input (too few sizes for the form, a size not beyond the
fitted ones without --allow-interpolation, an unknown group column, a table of several metrics
without --metric, ...) prints one message and exits with status 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from raysweep.cli.fit import (BY, CEILING, CHANCE, DIRECTION, LANGUAGE, LEVEL, METRIC, SEED,
                              SOURCE, SPLIT, STAGE, input_error, load_selected, split_list)


def predict_command(
    source: Path = SOURCE,
    n_params: float = typer.Option(..., "--n-params", "-n", show_default=False,
                                   help="The model size to predict, in parameters (30e9)."),
    tokens: Optional[float] = typer.Option(
        None, "--tokens", help="Training tokens D of that model (the chinchilla and two_step "
                               "forms need it)."),
    metric: Optional[str] = METRIC,
    by: Optional[str] = BY,
    form: str = typer.Option("power_law", "--form", "-f",
                             help="The form to predict with: power_law, bounded, chinchilla, "
                                  "two_step."),
    allow_interpolation: bool = typer.Option(
        False, "--allow-interpolation", help="Predict at a size at or below the largest fitted "
                                             "one (refused by default)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    stage: str = STAGE,
    split: str = SPLIT,
    language: Optional[str] = LANGUAGE,
    direction: Optional[str] = DIRECTION,
    ceiling: Optional[float] = CEILING,
    chance: Optional[float] = CHANCE,
    n_boot: int = typer.Option(1000, "--n-boot", min=20,
                               help="Bootstrap resamples behind the interval."),
    level: float = LEVEL,
    seed: int = SEED,
) -> None:
    """Predict the metric at a new model size per group, with a bootstrap prediction interval
    (widened where the leave-largest-out backtest shows it too narrow)."""
    from raysweep.console import make_console

    from raysweep.analysis import predict
    from raysweep.analysis.fits import fit_groups
    from raysweep.analysis.points import InputError
    from raysweep.analysis.summary import fit_notes

    try:
        points = load_selected(source, metric, stage, split, language)
        by_columns = split_list([by]) if by else None
        predict.check_request(points, by_columns, form, n_params, tokens, allow_interpolation)
        fits = fit_groups(points, forms=[form], by=by_columns, chance=chance, n_boot=n_boot,
                          level=level, seed=seed, direction=direction, ceiling=ceiling)
    except InputError as err:
        raise input_error(str(err)) from None
    predictions = predict.predict(fits.groups, n_params, tokens, seed=seed)

    if as_json:
        out = predict.as_json(predictions, source=str(points.source), n_params=n_params,
                              level=level)
        typer.echo(json.dumps(out, indent=2))
        return
    console = make_console()
    console.print(predict.predictions_table(predictions, n_params, level))
    notes = predict.interval_notes(predictions) + fit_notes(fits.groups) + list(fits.skipped)
    if tokens is not None and form not in predict.TOKEN_FORMS:
        notes.append(f"--tokens is not used by form {form!r} (a curve in N alone)")
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
