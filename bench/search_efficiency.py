"""Search efficiency: the training compute each searcher needs to land within 0.5 points of the
full grid's best English-dev score at the largest tiny size (issue 10).

A tabular benchmark (the standard way to compare hyperparameter searchers honestly and cheaply,
as in HPOBench / NAS-Bench): every configuration of a grid is trained ONCE, through raysweep's own
runner in this process (`raysweep.run.runner.run_local`, plans from `build_plan` on a space made
of `tiny_scaling`'s stage settings, the stage store shared so pretraining runs once per size and an
intermediate stage once per (mixture, lr_intermediate)). Its English-dev score at each target
evaluation (the ASHA rungs) and each stage's FLOPs (from the runner's own `split="spend"` rows and
the evaluation rows' cumulative FLOPs) are cached as Parquet under bench/results/, so the searchers
are then replayed over the table, many seeds, in seconds. The world and commit the table came
from are recorded in it; a table from another world is rebuilt, not reused.

Searchers replayed (one trial at a time; `compute` = intermediate + target training FLOPs;
pretraining, paid once per size by every method alike, is reported beside it):
- grid: every configuration, each intermediate stage once: the denominator;
- tpe: Optuna's TPESampler (the defaults `OptunaSearch(seed=...)` uses), continuous log-uniform
  lrs, snapped to the nearest grid point only to look a score up; a continuous lr_intermediate
  never shares a stage key, so every trial with an intermediate stage pays for its own;
- tpe_asha: the same under ASHA as Ray's `ASHAScheduler` defines it (raysweep's settings:
  time_attr training_iteration, grace period 1, reduction factor 2, max_t 100; the cutoff is
  the (1 - 1/rf) percentile of the scores recorded at a milestone): a stopped trial pays only the
  target steps it ran, and Optuna is told its last score (what Ray's OptunaSearch does);
- stage_tpe_asha: lr_intermediate from the grid's finite values (`share_stages`), so an
  intermediate stage is paid once per key, whoever trains it first;
- ladder_stage_tpe_asha: also narrowed by raysweep's ladder (`raysweep.run.ladder.plan_rung`):
  lr*(N) fitted on the grid's best lrs at the smaller sizes, each lr range cut to
  [lr*/3, 3 lr*], the predicted point evaluated first. The smaller sizes' grids are the sweep's
  earlier sizes: their cost is reported separately, not charged.
A searcher lands when a trial it ran to the end scores within the tolerance of the grid's best
final English-dev score; a stopped trial never counts as found.

    python bench/search_efficiency.py                 # table (cached) + replay, 20 seeds
    python bench/search_efficiency.py --quick         # a small tiny-xs grid, to validate
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysweep.run.ladder import NARROW, Rung, describe, full_point, plan_rung  # noqa: E402
from raysweep.spec.names import NO_MIXTURE  # noqa: E402
from raysweep.spec.space import ParamSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TOLERANCE = 0.005  # 0.5 points of a score in [0, 1]
# raysweep's ASHA: SchedulerSpec's defaults, and ASHAScheduler's own max_t (raysweep sets none).
GRACE, RF, MAX_T = 1, 2.0, 100
LR_TARGET = (5e-4, 1e-3, 2e-3)
LR_INTERMEDIATE = (1e-3, 2e-3, 4e-3)
SIZES = ("llama-tiny-xs", "llama-tiny-s", "llama-tiny-m")

Config = tuple[str, float | None, float]  # (mixture, lr_intermediate or None, lr_target)


# --- the table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One configuration at one size: English dev at each rung, the target FLOPs spent by then
    (cumulative), and its intermediate stage (key, FLOPs; "" and 0 for no intermediate)."""

    dev: tuple[float, ...]
    target_flops: tuple[float, ...]
    inter_key: str
    inter_flops: float


@dataclass
class Table:
    """A size's grid: config -> Entry, the grid's axes, and pretraining's FLOPs."""

    entries: dict[Config, Entry]
    mixtures: tuple[str, ...]
    lr_intermediate: tuple[float, ...]
    lr_target: tuple[float, ...]
    pretrain_flops: float = 0.0
    n_params: int = 1

    @classmethod
    def from_rows(cls, rows: list[dict]) -> "Table":
        by: dict[Config, list[dict]] = {}
        for r in rows:
            by.setdefault(config_of(r), []).append(r)
        entries = {}
        for c, rs in by.items():
            rs = sorted(rs, key=lambda r: r["rung"])
            entries[c] = Entry(tuple(r["dev"] for r in rs), tuple(r["target_flops"] for r in rs),
                               rs[0]["inter_key"], rs[0]["inter_flops"])
        return cls(entries, tuple(dict.fromkeys(r["mixture"] for r in rows)),
                   tuple(sorted({r["lr_intermediate"] for r in rows
                                 if r["lr_intermediate"] is not None})),
                   tuple(sorted({r["lr_target"] for r in rows})),
                   max(r["pretrain_flops"] for r in rows), max(r["n_params"] for r in rows))

    def lookup(self, mixture: str, lr_i: float | None, lr_t: float) -> tuple[Config, Entry]:
        """The grid point nearest (in log lr) to a sampled config."""
        lr_t = nearest(self.lr_target, lr_t)
        if (mixture, None, lr_t) in self.entries:  # no intermediate stage: lr_i means nothing
            return (mixture, None, lr_t), self.entries[(mixture, None, lr_t)]
        snapped = (mixture, nearest(self.lr_intermediate, lr_i), lr_t)
        return snapped, self.entries[snapped]

    @property
    def best(self) -> float:
        return max(e.dev[-1] for e in self.entries.values())

    @property
    def grid_compute(self) -> float:
        """Every config's full target run, every distinct intermediate stage once."""
        inter = {e.inter_key: e.inter_flops for e in self.entries.values() if e.inter_key}
        return sum(inter.values()) + sum(e.target_flops[-1] for e in self.entries.values())

    def best_config(self) -> Config:
        return max(self.entries, key=lambda c: (self.entries[c].dev[-1], -self.order(c)))

    def order(self, c: Config) -> int:
        return list(self.entries).index(c)


def config_of(r: dict) -> Config:
    return (r["mixture"], r["lr_intermediate"], r["lr_target"])


def nearest(values: tuple[float, ...], x: float) -> float:
    return min(values, key=lambda v: abs(math.log(v / x)))


def cell_range(values: tuple[float, ...]) -> tuple[float, float]:
    """The continuous range whose nearest-point cells are the grid's points (each end point's
    cell as wide in log as the inner ones), so a log-uniform draw favours no grid point."""
    ratio = (values[-1] / values[0]) ** (1 / (2 * (len(values) - 1))) if len(values) > 1 else 2.0
    return values[0] / ratio, values[-1] * ratio


# --- ASHA, as Ray's ASHAScheduler / _Bracket (ray.tune.schedulers.async_hyperband) -------------

class Asha:
    """One bracket, s = 0: milestones grace * rf^k below max_t; at a milestone a trial whose
    score is below the (1 - 1/rf) percentile of the scores recorded there stops; its score is
    recorded either way (mode max)."""

    def __init__(self, grace: int = GRACE, rf: float = RF, max_t: int = MAX_T):
        self.rf = rf
        n = int(np.log(max_t / grace) / np.log(rf) + 1)
        self.rungs = [(grace * rf ** k, {}) for k in reversed(range(n))]

    def on_result(self, trial: str, it: int, score: float) -> bool:
        """True: stop the trial."""
        stop = False
        for milestone, recorded in self.rungs:
            if it < milestone or trial in recorded:
                continue
            if recorded:
                stop = score < np.nanpercentile(list(recorded.values()), (1 - 1 / self.rf) * 100)
            recorded[trial] = score
            break
        return stop


# --- the replay --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    stage_aware: bool  # lr_intermediate from the grid's finite values, one key per value
    asha: bool
    # The finished smaller sizes' (n_params, {lr param: best value}), for the ladder's fit.
    ladder: tuple[tuple[int, dict[str, float]], ...] | None = None


@dataclass
class Outcome:
    compute: float  # FLOPs spent when it landed (or when it gave up)
    trials: int
    landed: bool
    found: Config | None = None
    stopped: int = 0  # trials ASHA stopped early
    inter_paid: int = 0  # intermediate stages trained
    log: list[tuple[Config, int, float]] = field(default_factory=list)  # config, rungs, cost


def search_params(table: Table, m: Method) -> dict[str, ParamSpec]:
    """The searched space as raysweep's ParamSpecs (what the ladder narrows)."""
    lr_i = (ParamSpec(values=list(table.lr_intermediate)) if m.stage_aware
            else ParamSpec(loguniform=cell_range(table.lr_intermediate)))
    return {"mixture": ParamSpec(values=list(table.mixtures)), "lr_intermediate": lr_i,
            "lr_target": ParamSpec(loguniform=cell_range(table.lr_target))}


def distributions(params: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ray's OptunaSearch conversion: tune.choice -> categorical, tune.loguniform -> log float."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {k: (CategoricalDistribution(p.values) if p.values is not None
                else FloatDistribution(*p.loguniform, log=True)) for k, p in params.items()}


def ladder_space(table: Table, m: Method) -> tuple[dict[str, ParamSpec], list[dict]]:
    """The searched params, narrowed by raysweep's ladder when the method has one, and the
    points Optuna evaluates first (raysweep's `full_point`)."""
    params = search_params(table, m)
    if m.ladder is None:
        return params, []
    _, narrowed, first = plan_rung(params, list(m.ladder), "target", table.n_params)
    params.update(narrowed)
    # full_point reads the space only for searched (simplex) mixtures, of which there are none.
    return params, [full_point(SimpleNamespace(mixtures={}), params, first)] if first else []


def replay(table: Table, m: Method, seed: int, max_trials: int = 200,
           tolerance: float = TOLERANCE) -> Outcome:
    """One searcher, one seed, trials one at a time until one ran to the end within
    `tolerance` of the grid's best (or `max_trials`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    params, first = ladder_space(table, m)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed))
    for point in first:
        study.enqueue_trial(point)
    dists, asha = distributions(params), Asha() if m.asha else None
    goal, paid, out = table.best - tolerance, set(), Outcome(0.0, 0, False)
    for t in range(max_trials):
        trial = study.ask(dists)
        mix = trial.params["mixture"]
        c, e = table.lookup(mix, trial.params["lr_intermediate"], trial.params["lr_target"])
        if e.inter_key and (not m.stage_aware or e.inter_key not in paid):
            out.compute += e.inter_flops
            out.inter_paid += 1
            paid.add(e.inter_key)
        ran = len(e.dev)
        if asha is not None:
            for it in range(1, len(e.dev)):  # the last rung finishes the trial anyway
                if asha.on_result(str(t), it, e.dev[it - 1]):
                    ran = it
                    break
            else:
                asha.on_result(str(t), len(e.dev), e.dev[-1])
        out.compute += e.target_flops[ran - 1]
        out.trials, out.stopped = t + 1, out.stopped + (ran < len(e.dev))
        out.log.append((c, ran, out.compute))
        study.tell(trial, e.dev[ran - 1])
        if ran == len(e.dev) and e.dev[-1] >= goal:
            out.landed, out.found = True, c
            break
    return out


def methods(ladder: tuple[tuple[int, dict[str, float]], ...]) -> dict[str, Method]:
    return {"tpe": Method(False, False), "tpe_asha": Method(False, True),
            "stage_tpe_asha": Method(True, True),
            "ladder_stage_tpe_asha": Method(True, True, ladder)}


def best_lrs(table: Table) -> dict[str, float]:
    """The grid's best config's learning rates (what the ladder fits; none for lr_intermediate
    when the best config has no intermediate stage)."""
    mix, lr_i, lr_t = table.best_config()
    return {"lr_target": lr_t, **({} if lr_i is None else {"lr_intermediate": lr_i})}


# --- building the table: the grid through raysweep's runner -----------------------------------

def bench_space(sizes: list[str], lr_i: tuple[float, ...], lr_t: tuple[float, ...], rungs: int):
    """tiny_scaling's stage settings and mixtures (one home for them; read at run time, so the
    table follows the world and the mixtures as they are now), with this bench's sizes, lr grid
    and `rungs` English-dev evaluations of the target stage (the ASHA rungs)."""
    import yaml

    from raysweep.spec import SPACES_DIR, SweepSpec, check

    raw = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    raw["name"] = "search_bench"
    raw["models"] = [{"name": s.removeprefix("llama-"), "tiny": s} for s in sizes]
    target = raw["stages"]["target"]
    if target["steps"] % rungs:
        raise SystemExit(f"target steps {target['steps']} do not split into {rungs} rungs")
    target["eval_every"] = target["steps"] // rungs
    raw["search"]["params"].update(lr_target={"values": list(lr_t)},
                                   lr_intermediate={"values": list(lr_i)},
                                   mixture={"values": list(raw["mixtures"])})
    spec = SweepSpec.model_validate(raw)
    check(spec, Path("bench/search_efficiency.py"))
    return spec


def grid_configs(spec) -> list[Config]:
    """Upstream-major order, so a trial finds its intermediate stage in the store."""
    p = spec.search.params
    return [(mix, None if not spec.mixtures[mix].tasks else li, lt)
            for mix in p["mixture"].values
            for li in (p["lr_intermediate"].values if spec.mixtures[mix].tasks else [None])
            for lt in p["lr_target"].values]


def run_grid(spec, storage: Path, log) -> list[dict]:
    """Every grid config at every size through `run_local` (finished trials are kept: the grid
    resumes), then its table rows from the metrics table."""
    import pyarrow.compute as pc
    import torch

    from raysweep.plan.build import build_plan
    from raysweep.results.tables import load
    from raysweep.run.runner import run_local

    torch.set_num_threads(1)
    sweep_dir = storage / spec.name
    done = set()
    if (sweep_dir / "trials").exists():
        done = {r["trial_id"] for r in load(sweep_dir, "trials").to_pylist()
                if r["status"] == "done"}
    plans = {}
    for m in spec.models:
        for mix, li, lt in grid_configs(spec):
            params = {"mixture": mix, "lr_target": lt, "seed": 0,
                      "lr_intermediate": li if li is not None else LR_INTERMEDIATE[0]}
            tid = f"{m.name}-{mix}-li{li}-lt{lt}"
            plans[tid] = plan = build_plan(spec, m, params)
            # (Re-checked per trial: grids of one size may run in several processes.)
            if tid not in done and not (sweep_dir / "trials" / f"{tid}.parquet").exists():
                begun = time.perf_counter()
                run_local(plan, storage, sweep_dir, tid)
                log(f"{tid}: {time.perf_counter() - begun:.0f} s")
    metrics = load(sweep_dir, "metrics")
    rows = []
    for tid, plan in plans.items():
        t = metrics.filter(pc.equal(metrics["trial_id"], tid)).to_pylist()
        rows.extend(table_rows(plan, tid, t))
    return rows


def table_rows(plan, tid: str, metrics: list[dict]) -> list[dict]:
    """A trial's rungs: English dev and the target FLOPs spent by then (the eval rows carry the
    trial's cumulative FLOPs; the upstream stages' own FLOPs are their spend rows)."""
    spend = {r["stage"]: r["value"] for r in metrics
             if r["split"] == "spend" and r["metric"] == "flops"}
    upstream = spend.get("pretrain", 0.0) + spend.get("intermediate", 0.0)
    target = plan.stage("target")
    dev = sorted((r["step"], r["value"], r["flops"]) for r in metrics
                 if r["stage"] == "eval" and r["split"] == "validation" and r["language"] == "en"
                 and r["metric"] == "score" and r["task"] == target.tasks[0])
    zero_shot = [r["value"] for r in metrics if r["stage"] == "eval" and r["split"] == "test"
                 and r["language"] == "all" and r["metric"] == "score"
                 and r["task"] == target.tasks[0]]
    inter = plan.stage("intermediate")
    if abs(dev[-1][2] - upstream - spend["target"]) > 1e-6 * spend["target"]:
        raise RuntimeError(f"{tid}: the last evaluation's FLOPs disagree with the spend rows")
    p = plan.params
    return [{"model": plan.model, "n_params": plan.n_params, "trial_id": tid,
             "mixture": p["mixture"], "lr_target": p["lr_target"],
             "lr_intermediate": p["lr_intermediate"] if inter else None,
             "rung": i + 1, "step": step, "dev": value, "target_flops": flops - upstream,
             "inter_key": inter.key if inter else "", "inter_flops": spend.get("intermediate", 0.0),
             "pretrain_flops": spend["pretrain"], "zero_shot": zero_shot[0] if zero_shot else None,
             "pretrain_key": plan.stage("pretrain").key}
            for i, (step, value, flops) in enumerate(dev)]


def provenance() -> dict[str, str]:
    """Which world and code a table came from."""
    from raysweep.data import DEFAULT_WORLD, world_key

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout
    # The world is DEFAULT_WORLD and the code that turns it into data and tasks: a change to
    # either moves `world_code` (stage keys see only the former).
    code = hashlib.sha1()
    for f in sorted([*(ROOT / "raysweep" / "data").glob("*.py"),
                     *(ROOT / "raysweep" / "tasks").glob("synthetic*.py"),
                     ROOT / "search_spaces" / "tiny_scaling.yaml"]):
        code.update(f.read_bytes())
    return {"world_key": world_key(DEFAULT_WORLD), "world_code": code.hexdigest()[:12],
            "commit": git("rev-parse", "--short", "HEAD").strip(),
            "dirty": "yes" if git("status", "--porcelain", "raysweep", "search_spaces") else "no"}


# --- main --------------------------------------------------------------------------------------

def load_or_build(args, size: str, log) -> tuple[Table, dict[str, Any]]:
    """A size's cached table if it came from this world and this grid (or `--reuse-table`: from
    whatever world, said in its provenance), else its grid is run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    prov = provenance()
    grid = {"lr_intermediate": list(args.lr_intermediate), "lr_target": list(args.lr_target),
            "rungs": args.rungs}
    path = RESULTS / f"search_grid_{size.removeprefix('llama-')}.parquet"
    if path.exists() and not args.rebuild:
        t = pq.read_table(path)
        meta = json.loads(t.schema.metadata[b"search_bench"])
        same = all(meta[k] == prov[k] for k in ("world_key", "world_code"))
        if meta["grid"] == grid and (same or args.reuse_table):
            return Table.from_rows(t.to_pylist()), {**meta, "current_world": same}
        log(f"{path.name} is from another world or grid: rebuilding")
    spec = bench_space([size], tuple(args.lr_intermediate), tuple(args.lr_target), args.rungs)
    storage = Path(args.grid_dir or Path(args.storage) / f"grid-{prov['world_code']}-"
                                                          f"{prov['world_key']}")
    begun = time.perf_counter()
    rows = run_grid(spec, storage, log)
    meta = {**prov, "grid": grid, "built_s": round(time.perf_counter() - begun),
            "built": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "storage": str(storage)}
    t = pa.Table.from_pylist(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pq.write_table(t.replace_schema_metadata({b"search_bench": json.dumps(meta).encode()}), path)
    return Table.from_rows(rows), {**meta, "current_world": True}


def summarize(outcomes: list[Outcome], grid: float) -> dict[str, Any]:
    ratios = [o.compute / grid for o in outcomes]
    return {"mean": float(np.mean(ratios)), "median": float(np.median(ratios)),
            "min": float(np.min(ratios)), "max": float(np.max(ratios)),
            "landed": sum(o.landed for o in outcomes),
            "trials_mean": float(np.mean([o.trials for o in outcomes])),
            "stopped_mean": float(np.mean([o.stopped for o in outcomes])),
            "inter_paid_mean": float(np.mean([o.inter_paid for o in outcomes]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small tiny-xs grid, to validate")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES),
                    help="grid sizes, smallest first; the last is searched, the rest feed the "
                         "ladder")
    ap.add_argument("--seeds", type=int, default=20, help="searcher seeds per method")
    ap.add_argument("--max-trials", type=int, default=200)
    ap.add_argument("--rungs", type=int, default=3, help="English-dev evaluations per target")
    ap.add_argument("--lr-intermediate", type=float, nargs="+", default=list(LR_INTERMEDIATE))
    ap.add_argument("--lr-target", type=float, nargs="+", default=list(LR_TARGET))
    ap.add_argument("--storage", default="/tmp/searchbench")
    ap.add_argument("--grid-dir", help="where the grid's runs go (default: under --storage, "
                                       "by world)")
    ap.add_argument("--rebuild", action="store_true", help="run the grid even if cached")
    ap.add_argument("--reuse-table", action="store_true",
                    help="use the cached tables even if the world has changed since")
    args = ap.parse_args()
    if args.quick:
        args.sizes = ["llama-tiny-xs"]
    args.name = "quick" if args.quick else args.sizes[-1].removeprefix("llama-")

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    built = {s.removeprefix("llama-"): load_or_build(args, s, log) for s in args.sizes}
    tables, meta = {k: v[0] for k, v in built.items()}, {k: v[1] for k, v in built.items()}
    *smaller, target = list(tables)
    table = tables[target]
    finished = tuple((tables[s].n_params, best_lrs(tables[s])) for s in smaller)
    rung, _, _ = plan_rung(search_params(table, Method(True, True)), list(finished), target,
                           table.n_params)
    rung.found = best_lrs(table)
    grid = table.grid_compute
    results, per_seed = {}, {}
    for name, method in methods(finished).items():
        outs = [replay(table, method, seed, args.max_trials) for seed in range(args.seeds)]
        results[name] = summarize(outs, grid)
        per_seed[name] = [round(o.compute / grid, 4) for o in outs]
    best_c = table.best_config()
    report = {
        "size": target, "n_params": table.n_params, "configs": len(table.entries),
        "best_dev": table.best, "best_config": best_c, "tolerance": TOLERANCE,
        "within_tolerance": sum(e.dev[-1] >= table.best - TOLERANCE
                                for e in table.entries.values()),
        "grid_flops": grid, "pretrain_flops": table.pretrain_flops,
        "ladder_sizes_flops": {s: tables[s].grid_compute + tables[s].pretrain_flops
                               for s in smaller},
        "ladder": {"predicted": rung.predicted, "found": rung.found, "narrow": NARROW},
        "methods": results, "per_seed": per_seed, "table": meta,
    }
    (RESULTS / f"search_efficiency_{args.name}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in report if k not in ("per_seed", "methods")}))
    for name, r in results.items():
        print(f"{name:>22}: compute/grid mean {r['mean']:.3f} (median {r['median']:.3f}, "
              f"{r['min']:.3f}-{r['max']:.3f}), landed {r['landed']}/{args.seeds}, "
              f"{r['trials_mean']:.1f} trials, {r['stopped_mean']:.1f} stopped, "
              f"{r['inter_paid_mean']:.1f} intermediate stages")
    print(describe(rung))
    print(json.dumps({"compute_over_grid": {k: round(v["mean"], 4) for k, v in results.items()},
                      "seeds": args.seeds}))


if __name__ == "__main__":
    main()
