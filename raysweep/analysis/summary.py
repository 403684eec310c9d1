"""The table `raysweep fit` prints (and the notebook shows): one row per group and form, with
each parameter's interval, any estimate on a bound of its search, and the leave-largest-out
check; and the notes printed under it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from raysweep.analysis.fits import GroupFit, holdout_coverage


def _fmt(x: float | None) -> str:
    return "nan" if x is None or not np.isfinite(x) else f"{x:.3g}"


def summary_table(fits: Sequence[GroupFit], title: str = "scaling fits"):
    """A rich table: group, form, points, parameters with their intervals (and, in red, those on
    a bound), held-out error and the holdout prediction interval."""
    from rich.table import Table

    level = fits[0].fit.level if fits else 0.95
    table = Table(title=title, show_lines=True)
    table.add_column("group")
    table.add_column("form\n(fitted)")
    table.add_column("points\n(sizes)", justify="right")
    table.add_column(f"parameters [{level:.0%} CI]")
    table.add_column(f"largest size held out:\npred [{level:.0%} PI] vs true")
    for f in fits:
        params = "\n".join(f"{p.name} {_fmt(p.value)} \\[{_fmt(p.lo)}, {_fmt(p.hi)}]"
                           for p in f.fit.params)
        if f.fit.flags:
            params += "\n[red]ON BOUND: " + "; ".join(f.fit.flags) + "[/]"
        table.add_row(f.label.replace(", ", "\n"), f"{f.fit.name}\n({f.target})",
                      f"{f.fit.n_points}\n({f.fit.n_sizes})", params, _holdout_cell(f))
    return table


def _holdout_cell(f: GroupFit) -> str:
    h = f.fit.holdout
    if h is None:
        return "-"
    pred = _fmt(h.pred)
    if f.holdout_interval is not None and np.isfinite(f.holdout_interval.lo):
        covered = "inside" if f.holdout_covered else "[red]outside[/]"
        lo, hi = f.transform.clip(f.holdout_interval.lo, f.holdout_interval.hi)
        pred += f" \\[{_fmt(lo)}, {_fmt(hi)}] ({covered})"  # \\[: not rich markup
    return f"N={h.n_params:.3g}:\n{pred}\nvs {_fmt(h.true)} ({h.rel_err:.1%})"


def fit_notes(fits: Sequence[GroupFit]) -> list[str]:
    """What to read the table with: each fit on a bound (the form reaches this data only at
    the edge of what it allows; with A = 0 the curve is flat, the mean, and follows no trend),
    how each direction was decided, and how often the holdout intervals held the largest
    size."""
    notes = []
    for f in fits:
        if f.fit.flags:
            flat = " (A = 0: a flat curve, the mean; it follows no trend)" if any(
                flag.startswith("A at lower bound") for flag in f.fit.flags) else ""
            notes.append(f"{f.label}, {f.fit.name}: on a bound of the search "
                         f"({'; '.join(f.fit.flags)}): the form reaches this data only at the "
                         f"edge of what it allows{flat}; read its predictions with care")
    decided = sorted({f"{f.metric or 'value'} fitted as {f.direction.way} "
                      f"({f.direction.source})" for f in fits if f.direction is not None})
    notes += [f"direction: {d}" for d in decided]
    covered, total = holdout_coverage(fits)
    if total:
        level = fits[0].fit.level
        notes.append(f"holdout coverage: the largest size fell inside its {level:.0%} prediction "
                     f"interval (from the smaller sizes) in {covered} of {total} fits "
                     f"({covered / total:.0%})")
    return notes
