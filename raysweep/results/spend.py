"""A sweep's spend and what stage reuse saved, read from its tables (what `raysweep show` prints
under the best results).

Each stage a trial ran left `split="spend"` rows in the metrics table
(`raysweep.run.runner.TrialRunner.record_spend`): its own training tokens and FLOPs, whether it
was loaded from the stage store (`reused`), and its wall and device-seconds. A reused stage's
tokens and FLOPs are what it cost when it was trained, i.e. what reuse saved; the
device-seconds it saved are those of the trial in this sweep that trained the same key (the
trials table's `stage_keys`), or, where that trial is not in this sweep, its FLOPs at the
device-seconds per FLOP this sweep measured for that size and stage.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow.compute as pc
from rich.table import Table

from raysweep.results.tables import Where, load


@dataclass
class Spend:
    """Totals per stage kind: what ran (`spent_*`) and what reuse saved (`saved_*`)."""

    spent_tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    spent_flops: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    spent_device_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    saved_tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    saved_flops: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    saved_device_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    runs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def total(self, what: str) -> float:
        return sum(getattr(self, what).values())

    def to_dict(self) -> dict:
        names = ("spent_tokens", "spent_flops", "spent_device_s", "saved_tokens", "saved_flops",
                 "saved_device_s", "runs", "reuses")
        return {n: {**getattr(self, n), "total": self.total(n)} for n in names}


def sweep_spend(sweep_dir: Where) -> Spend:
    metrics = load(sweep_dir, "metrics")
    rows = metrics.filter(pc.equal(metrics["split"], "spend")).to_pylist()
    stages: dict[tuple[str, str], dict] = {}
    for r in rows:
        s = stages.setdefault((r["trial_id"], r["stage"]), {"model": r["model"],
                                                             "device_s": r["device_s"] or 0.0})
        s[r["metric"]] = r["value"]
    keys = {t["trial_id"]: json.loads(t["stage_keys"] or "{}")
            for t in load(sweep_dir, "trials").to_pylist()}
    out = Spend()
    trained_device_s: dict[str, float] = {}  # stage key -> device-seconds of its training
    rate: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # s, flops
    for (trial, kind), s in stages.items():
        if s.get("reused"):
            continue
        out.runs[kind] += 1
        out.spent_tokens[kind] += s.get("tokens", 0.0)
        out.spent_flops[kind] += s.get("flops", 0.0)
        out.spent_device_s[kind] += s["device_s"]
        key = keys.get(trial, {}).get(kind)
        if key is not None:
            trained_device_s[key] = s["device_s"]
        r = rate[(s["model"], kind)]
        r[0], r[1] = r[0] + s["device_s"], r[1] + s.get("flops", 0.0)
    for (trial, kind), s in stages.items():
        if not s.get("reused"):
            continue
        out.reuses[kind] += 1
        out.saved_tokens[kind] += s.get("tokens", 0.0)
        out.saved_flops[kind] += s.get("flops", 0.0)
        key = keys.get(trial, {}).get(kind)
        seconds, flops = rate[(s["model"], kind)]
        out.saved_device_s[kind] += trained_device_s.get(
            key, s.get("flops", 0.0) * seconds / flops if flops else 0.0)
    return out


def spend_table(sweep_dir: Where) -> Table | None:
    """The sweep's spend per stage kind and what reuse saved; None for a sweep without spend
    rows (recorded before they existed)."""
    spend = sweep_spend(sweep_dir)
    kinds = sorted(set(spend.runs) | set(spend.reuses))
    if not kinds:
        return None
    saved, spent = spend.total("saved_flops"), spend.total("spent_flops")
    table = Table(title=f"spend: {spent:.3g} training FLOPs, "
                  f"{spend.total('spent_device_s') / 3600:.3g} device-h; reuse saved "
                  f"{saved:.3g} FLOPs ({saved / (saved + spent) if saved + spent else 0:.0%} of "
                  f"what the sweep would have cost), {spend.total('saved_device_s') / 3600:.3g} "
                  "device-h")
    for col in ("stage", "runs", "tokens", "FLOPs", "device-h", "reused", "saved FLOPs",
                "saved device-h"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for k in kinds:
        table.add_row(k, str(spend.runs[k]), f"{spend.spent_tokens[k]:.3g}",
                      f"{spend.spent_flops[k]:.3g}", f"{spend.spent_device_s[k] / 3600:.3g}",
                      str(spend.reuses[k]), f"{spend.saved_flops[k]:.3g}",
                      f"{spend.saved_device_s[k] / 3600:.3g}")
    return table
