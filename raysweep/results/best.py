"""The one "best trial" rule, used by `raysweep show` and by the analysis (`raysweep fit`).

XTREME's protocol: among the finished trials of a group (by default one model and one
mixture), the best is the one with the best English dev score, in the direction the sweep
searched (`search.mode` in the sweep's own space.json; "max" where there is none). Ties go to
the smallest trial_id, so the choice never depends on the order files were read in. A trial that
did not finish, or has no dev score, is never chosen: picking it by its test score instead would
select on the test set.

Which dev score a row is judged by is the caller's: the trials table's `objective` (the mean
English dev score over the target tasks, what Tune searched on) for a whole trial, and a task's
own English dev score for that task's points (XTREME selects per task).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from raysweep.results.tables import DONE, load, location, read_text

# Written by `raysweep launch` into the sweep directory: the normalized SweepSpec as JSON.
SPACE_FILE = "space.json"
DEFAULT_MODE = "max"  # the SweepSpec default for search.mode
TRIAL_GROUP = ("model", "mixture")  # what `raysweep show` reports one best trial for


def recorded_space(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The sweep's space.json as plain JSON, or None where the sweep has none (written by hand,
    or before launch recorded it). Read as JSON rather than re-validated as a SweepSpec, so that
    a sweep recorded by an older version still reads."""
    text = read_text(location(sweep_dir) / SPACE_FILE)  # a local path or a URI
    return None if text is None else json.loads(text)


def sweep_mode(sweep_dir: str | Path) -> str:
    """"max" or "min": which way the sweep's objective is better."""
    space = recorded_space(sweep_dir) or {}
    return space.get("search", {}).get("mode", DEFAULT_MODE)


def _score(row: dict, column: str) -> float | None:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _better(row: dict, than: dict, column: str, mode: str) -> bool:
    a, b = _score(row, column), _score(than, column)
    if a != b:
        return a > b if mode == "max" else a < b
    return str(row["trial_id"]) < str(than["trial_id"])


def pick_best(rows: Iterable[dict], keys: Sequence[str], *, score: str = "objective",
              mode: str = DEFAULT_MODE) -> list[dict]:
    """Per value of `keys`, the finished row with the best `score` (see the module docstring).
    Rows with a `status` must have status "done"; rows without one come from tables that hold
    finished trials only. The groups come out in the order their first candidate appears."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min'; got {mode!r}")
    best: dict[tuple, dict] = {}
    for row in rows:
        if row.get("status", DONE) != DONE or _score(row, score) is None:
            continue
        key = tuple(row.get(c) for c in keys)
        if key not in best or _better(row, best[key], score, mode):
            best[key] = row
    return list(best.values())


def finished_trial_ids(trials: Iterable[dict]) -> set[str]:
    """The trials whose latest attempt finished (status "done")."""
    return {t["trial_id"] for t in trials if t["status"] == DONE}


def best_trials(sweep_dir: str | Path,
                keys: Sequence[str] = TRIAL_GROUP) -> dict[tuple, dict]:
    """(model, mixture) -> the best trial's row of the trials table, smallest model first."""
    chosen = pick_best(load(sweep_dir, "trials").to_pylist(), keys, mode=sweep_mode(sweep_dir))
    by_key = {tuple(t[c] for c in keys): t for t in chosen}
    return dict(sorted(by_key.items(), key=lambda kv: (kv[1]["n_params"], kv[0][1:])))
