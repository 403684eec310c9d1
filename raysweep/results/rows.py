"""The trials table's row: built here and nowhere else, from the plan and the trial's summary."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from raysweep.plan.build import TrialPlan
from raysweep.results.tables import MIX_PREFIX


def trial_row(plan: TrialPlan, trial_id: str, status: str, summary: dict[str, Any] | None,
              error: str | None, wall_s: float) -> dict[str, Any]:
    """`summary`: what the runner reported last (objective, zero_shot, reused); for a trial
    stopped or failed midway, its last report, or nothing."""
    summary = summary or {}
    return {
        **plan.identity_columns(trial_id),
        "workers": plan.workers, "node_id": summary.get("node_id"), "status": status,
        "precision": next((s.precision for s in plan.stages if hasattr(s, "precision")), None),
        "error": error,
        "objective": summary.get("objective"), "zero_shot": summary.get("zero_shot"),
        "stage_keys": json.dumps({s.kind: s.key for s in plan.stages}),
        "reused_stages": json.dumps([r for r in str(summary.get("reused", "")).split(",") if r]),
        "config": json.dumps(plan.params, sort_keys=True), "wall_s": wall_s,
        "finished_at": datetime.now(timezone.utc),
        **mixture_columns(plan),
    }


def mixture_columns(plan: TrialPlan) -> dict[str, float]:
    """`mix_<task>`: the intermediate mixture's weights, normalized to sum to 1 (a searched
    mixture's are its rounded draws already), before the strategy's size scaling."""
    stage = plan.stage("intermediate")
    if stage is None:
        return {}
    total = sum(stage.mixture.values())
    return {f"{MIX_PREFIX}{t}": w / total for t, w in stage.mixture.items()}
