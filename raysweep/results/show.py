"""Readable summaries of a sweep's tables (what `raysweep show` prints).

"Best" is the one rule in `raysweep.results.best` (XTREME's protocol: the finished trial with the
best English dev score, the `objective`); its zero-shot test scores are reported.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
from rich.table import Table

from raysweep.results.best import best_trials
from raysweep.results.spend import spend_table
from raysweep.results.tables import load


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def best_tables(sweep_dir: Path) -> list[Table]:
    trials = load(sweep_dir, "trials").to_pylist()
    by_status: dict[str, int] = {}
    for t in trials:
        by_status[t["status"]] = by_status.get(t["status"], 0) + 1
    out = []
    per_size = Table(title=f"{Path(sweep_dir).name}: best trial per model size "
                     f"({', '.join(f'{n} {s}' for s, n in sorted(by_status.items()))})")
    for col in ("model", "params", "mixture", "lr_intermediate", "lr_target", "dev (en)",
                "zero-shot", "trial", "reused stages"):
        per_size.add_column(col)
    best = best_trials(sweep_dir)
    for (model, mixture), t in best.items():
        per_size.add_row(model, f"{t['n_params']:,}", mixture, _fmt(t["lr_intermediate"]),
                         _fmt(t["lr_target"]), _fmt(t["objective"]), _fmt(t["zero_shot"]),
                         t["trial_id"], t["reused_stages"])
    out.append(per_size)

    metrics = load(sweep_dir, "metrics")
    rows = metrics.filter(pc.and_(pc.and_(pc.equal(metrics["stage"], "eval"),
                                          pc.equal(metrics["split"], "test")),
                                  pc.equal(metrics["metric"], "score"))).to_pylist()
    chosen = {t["trial_id"]: k for k, t in best.items()}
    rows = [r for r in rows if r["trial_id"] in chosen]
    tasks = sorted({r["task"] for r in rows if not r["task"].startswith("xtreme_r")})
    for task in tasks:
        cells = {(chosen[r["trial_id"]], r["language"]): r["value"] for r in rows
                 if r["task"] == task}
        langs = sorted({lang for _, lang in cells}, key=lambda x: (x == "all", x != "en", x))
        out.append(_pivot(f"{task}: test score of the best trial per (model, mixture); "
                          "all = mean over non-English", best, cells, langs))
    aggregates = {(chosen[r["trial_id"]], r["task"]): r["value"] for r in rows
                  if r["task"].startswith("xtreme_r")}
    if aggregates:
        names = sorted({name for _, name in aggregates})
        out.append(_pivot("XTREME-R aggregates (each task: mean over its languages)", best,
                          aggregates, names))
    spend = spend_table(sweep_dir)  # the sweep's spend and what stage reuse saved
    if spend is not None:
        out.append(spend)
    return out


def _pivot(title: str, best: dict, cells: dict, columns: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("model")
    table.add_column("mixture")
    for col in columns:
        table.add_column(col)
    for key in best:
        if any((key, col) in cells for col in columns):
            table.add_row(key[0], key[1], *(_fmt(cells.get((key, col))) for col in columns))
    return table
