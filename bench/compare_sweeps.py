"""Compare two sweep directories' metrics tables, row by row: the check that a change left a
sweep's numbers as they were (issue 8: `tiny_scaling` before and after the move).

Rows are matched by (model, trial config, stage, task, language, split, metric, step), not by
trial id (Tune names trials anew each run); values, tokens and FLOPs must agree exactly (or
within --tol). Stage keys of matching trials are compared too.

    python bench/compare_sweeps.py runs-before/tiny_scaling runs-after/tiny_scaling

Last line: one JSON object {"rows_a", "rows_b", "common", "differing", "max_abs_diff",
"only_a", "only_b", "stage_keys_equal", "trials_compared"}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysweep.results.tables import load  # noqa: E402


def keyed(sweep_dir: str):
    trials = {t["trial_id"]: t for t in load(sweep_dir, "trials").to_pylist()}
    rows: dict[tuple, list[tuple]] = {}
    for r in load(sweep_dir, "metrics").to_pylist():
        t = trials.get(r["trial_id"])
        if t is None:  # a trial without its row yet: not comparable
            continue
        key = (t["model"], t["config"], r["stage"], r["task"], r["language"], r["split"],
               r["metric"], r["step"])
        rows.setdefault(key, []).append((r["value"], r["tokens"], r["flops"]))
    stage_keys = {(t["model"], t["config"]): t["stage_keys"] for t in trials.values()}
    return rows, stage_keys


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--tol", type=float, default=0.0)
    args = ap.parse_args()
    a, ka = keyed(args.a)
    b, kb = keyed(args.b)
    common = set(a) & set(b)
    diffs = [abs(x[0] - y[0]) for k in common for x, y in zip(a[k], b[k])
             if x[0] is not None and y[0] is not None]
    differing = [k for k in common if len(a[k]) != len(b[k]) or any(
        abs(x[0] - y[0]) > args.tol or x[1:] != y[1:] for x, y in zip(a[k], b[k])
        if x[0] is not None and y[0] is not None)]
    trials = set(ka) & set(kb)
    out = {"rows_a": len(a), "rows_b": len(b), "common": len(common),
           "differing": len(differing), "max_abs_diff": max(diffs, default=0.0),
           "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a)),
           "stage_keys_equal": all(ka[t] == kb[t] for t in trials),
           "trials_compared": len(trials)}
    for k in sorted(differing, key=str)[:5]:
        print("differs:", k, a[k], b[k])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
