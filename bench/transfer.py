"""Zero-shot transfer in the synthetic world, through the same runner as a sweep trial.

Every run here is a trial: a plan built from a space (`tiny_scaling`'s stage settings, with the
sizes and mixtures below) and run in this process by `raysweep.run.runner.run_local`, writing
the same metrics table a sweep writes; the figures are read back from that table. Pretraining is
a stored stage, so it runs once per size and every seed reuses it; the seeds vary the
intermediate and target stages (head initialization, data order).

Measures, with the tiny LLaMA sizes on CPU (one process, `torch.set_num_threads(1)` unless
--threads says otherwise):
1. zero-shot accuracy on syn_xnli in the non-English languages after pretrain -> target,
   against chance (1/3), per size, and whether it rises at each size step (Welch's t-test over
   seeds per step: with three sizes a rank correlation is +-1 by construction, so none is shown);
2. the Spearman rank correlation between a language's distance from English and its zero-shot
   accuracy (per-language means over sizes and seeds; five languages);
3. the effect of each English intermediate task, and of mixtures of two (`a+b`: 50/50), on the
   mean zero-shot score (mean +- sd over seeds) against no intermediate task, at every size,
   with Holm-corrected p-values over the tasks compared at that size, and whether the best
   mixture beats the best single task;
4. the mean zero-shot score per size.
Then rewrites the README section between `<!-- transfer:start -->` and `<!-- transfer:end -->`.

    python bench/transfer.py --seeds 10 --first-seed 100   # full run (README updated)
    python bench/transfer.py --quick            # a smaller run, README not touched
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import torch
import yaml
from scipy.stats import spearmanr, ttest_ind

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysweep.data import get_world, normalize_world  # noqa: E402
from raysweep.plan.build import build_plan  # noqa: E402
from raysweep.results.tables import load  # noqa: E402
from raysweep.run.runner import run_local  # noqa: E402
from raysweep.spec import SPACES_DIR, NO_MIXTURE, SweepSpec, check  # noqa: E402

START, END = "<!-- transfer:start -->", "<!-- transfer:end -->"
CHANCE = 1 / 3
TARGET = "syn_xnli"
SIZES = {"llama-tiny-xs": "tiny-xs", "llama-tiny-s": "tiny-s", "llama-tiny-m": "tiny-m"}

# English intermediate tasks compared in figure 3 (each alone, weight 1; `a+b` is a 50/50
# mixture of two tasks).
# Chosen from the pilot runs in raysweep/data/DESIGN.md (seeds 0-9); the README's run uses other
# seeds (--first-seed), so its tests are not the pilots' own.
INTERMEDIATE_TASKS = ("syn_nli_en", "syn_hypernym", "syn_antonym", "syn_lexparity",
                      "syn_lexclass", "syn_nli_en+syn_hypernym")
QUICK_TASKS = ("syn_nli_en", "syn_random")
MIX = "+"


def mixture_of(name: str) -> dict:
    """A figure-3 entry as a space mixture: one task, or `a+b` drawn equally often (uniform
    sampler: proportional sampling would follow the tasks' sizes, and syn_mlm has a training
    set per language)."""
    tasks = name.split(MIX)
    if len(tasks) == 1:
        return {"tasks": {name: 1.0}}
    return {"tasks": {t: 1.0 for t in tasks}, "sampler": "uniform"}


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m: float, s: float) -> str:
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (family-wise error over the tests given)."""
    order = sorted(pvalues, key=pvalues.get)
    out, running = {}, 0.0
    for i, name in enumerate(order):
        running = max(running, min(1.0, (len(order) - i) * pvalues[name]))
        out[name] = running
    return out


def bench_space(args, tasks: tuple[str, ...]) -> SweepSpec:
    """tiny_scaling's stages (one home for their settings), with the bench's sizes, mixtures
    and intermediate budget."""
    raw = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    raw["name"] = "transfer_bench"
    raw["world"] = json.loads(args.world)
    raw["models"] = [{"name": SIZES.get(s, s), "tiny": s} for s in args.sizes]
    raw["stages"]["target"].update(tasks=[TARGET], eval_every=raw["stages"]["target"]["steps"])
    raw["stages"]["intermediate"].update(steps=args.inter_steps)
    raw["mixtures"] = {NO_MIXTURE: {}, **{t: mixture_of(t) for t in tasks}}
    raw["search"]["params"]["mixture"] = {"values": [NO_MIXTURE, *tasks]}
    spec = SweepSpec.model_validate(raw)
    check(spec, Path("bench/transfer.py"))
    return spec


def run(spec: SweepSpec, storage: Path, size: str, mixture: str, seed: int, args) -> dict:
    """One trial through the runner; its per-language test scores from the metrics table."""
    m = next(x for x in spec.models if x.tiny == size)
    plan = build_plan(spec, m, {"lr_target": args.target_lr, "lr_intermediate": args.inter_lr,
                                "mixture": mixture, "seed": seed})
    # the learning rates are in the id: runs with other settings may share a --storage
    trial_id = f"{m.name}-{mixture}-s{seed}-lr{args.inter_lr:g}-{args.target_lr:g}"
    sweep_dir = storage / spec.name
    run_local(plan, storage, sweep_dir, trial_id)
    t = load(sweep_dir, "metrics")
    t = t.filter(pc.equal(t["trial_id"], trial_id))
    rows = t.to_pylist()
    scores = {r["language"]: r["value"] for r in rows if r["stage"] == "eval" and
              r["split"] == "test" and r["metric"] == "score" and r["task"] == TARGET and
              r["language"] != "all"}
    walls = {}
    for r in rows:
        if r["split"] == "train" and r["wall_s"] is not None:
            walls[r["stage"]] = max(walls.get(r["stage"], 0.0), r["wall_s"])
    return {"scores": scores, "wall_s": walls, "n_params": plan.n_params,
            "pretrain_steps": plan.stage("pretrain").steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run; README untouched")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds are first-seed .. first-seed + seeds - 1 (a confirmatory run "
                         "on seeds no pilot used)")
    ap.add_argument("--inter-sizes", nargs="*", default=None,
                    help="sizes for figure 3 (default: every size; none given: no figure-3 "
                         "runs, e.g. a process that runs only `none`, merged with --render)")
    ap.add_argument("--tasks", nargs="+", default=None, help="intermediate tasks of figure 3")
    # Defaults: tiny_scaling's own settings (one home): its intermediate budget and lr, and
    # the larger of its target learning rates.
    base = yaml.safe_load((SPACES_DIR / "tiny_scaling.yaml").read_text())
    ap.add_argument("--inter-steps", type=int, default=base["stages"]["intermediate"]["steps"])
    ap.add_argument("--inter-lr", type=float,
                    default=base["search"]["params"]["lr_intermediate"]["values"][0])
    ap.add_argument("--target-lr", type=float,
                    default=max(base["search"]["params"]["lr_target"]["values"]))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--world", default="{}", help="world overrides, JSON")
    ap.add_argument("--storage", default=None, help="stage store and tables (default: a temp dir)")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--render", nargs="+", default=None,
                    help="re-render the section from --json files of earlier runs (no runs); "
                         "several files (e.g. one process per size) are merged")
    ap.add_argument("--skip-none", action="store_true",
                    help="only figure 3's intermediate runs (merge with a run that has `none`)")
    args = ap.parse_args()
    if args.render:
        raw = merge([json.loads(Path(f).read_text()) for f in args.render])
        w = get_world(raw["world"])
        section = render(raw, w, [c for c in w.codes if c != "en"])
        print(section)
        if not args.no_readme and not raw["args"]["quick"]:
            write_readme(Path(args.readme), section)
        return
    torch.set_num_threads(args.threads)
    tasks = tuple(args.tasks or (QUICK_TASKS if args.quick else INTERMEDIATE_TASKS))
    spec = bench_space(args, tasks)
    world = normalize_world(spec.world)
    w = get_world(world)
    seeds = list(range(args.first_seed, args.first_seed +
                       (2 if args.quick and args.seeds == 5 else args.seeds)))
    inter_sizes = args.sizes if args.inter_sizes is None else args.inter_sizes
    storage = Path(args.storage or tempfile.mkdtemp(prefix="transfer-bench-"))
    t0 = time.perf_counter()
    target = spec.stages.target
    raw: dict = {"world": world, "sizes": {}, "inter": {}, "settings": {
        "target": {"steps": target.steps, "lr": args.target_lr},
        "intermediate": {"steps": args.inter_steps, "lr": args.inter_lr},
        "batch_size": target.batch_size, "max_length": target.max_length, "seeds": seeds}}

    def log(size, mixture, seed, r):
        z = statistics.fmean(v for k, v in r["scores"].items() if k != "en")
        print(f"[{time.perf_counter() - t0:6.0f}s] {size} {mixture} seed {seed}: en "
              f"{r['scores']['en']:.3f} zero-shot {z:.3f}", flush=True)

    def save():  # after every run, so that a run cut short still leaves its numbers
        raw["wall_s"] = time.perf_counter() - t0
        raw["args"] = {"quick": args.quick, "threads": args.threads, "argv": sys.argv[1:]}
        raw["mixture_order"] = [NO_MIXTURE, *tasks]
        if args.json:
            Path(args.json).write_text(json.dumps(raw, indent=1))

    for size in [] if args.skip_none else args.sizes:  # figures 1, 2, 4: pretrain -> target
        runs = []
        for seed in seeds:
            runs.append(run(spec, storage, size, NO_MIXTURE, seed, args))
            log(size, NO_MIXTURE, seed, runs[-1])
            save()
        raw["sizes"][size] = {"n_params": runs[0]["n_params"],
                              "pretrain_steps": runs[0]["pretrain_steps"],
                              "pretrain_s": runs[0]["wall_s"].get("pretrain", 0.0),
                              "runs": [r["scores"] for r in runs]}
    for size in inter_sizes:  # figure 3: English intermediate tasks at each size
        mixes = raw["inter"].setdefault(size, {} if args.skip_none else
                                        {NO_MIXTURE: raw["sizes"][size]["runs"]})
        for task in tasks:
            mixes[task] = []
            for seed in seeds:
                r = run(spec, storage, size, task, seed, args)
                mixes[task].append(r["scores"])
                log(size, task, seed, r)
                save()
    save()
    if args.skip_none:
        return

    section = render(raw, w, [c for c in w.codes if c != "en"])
    print(section)
    if not args.quick and not args.no_readme:
        write_readme(Path(args.readme), section)
        print(f"README section rewritten: {args.readme}")
    print(json.dumps(summary(raw, [c for c in w.codes if c != "en"])))


def merge(raws: list[dict]) -> dict:
    """Results of several processes run side by side (same world and settings) as one: sizes
    and figure-3 entries are taken from whichever file has them; wall time is the longest."""
    out = {**raws[0], "sizes": {}, "inter": {}, "mixture_order": []}
    for raw in raws:
        assert raw["world"] == out["world"] and raw["settings"] == out["settings"], \
            "merged runs must share the world and the settings"
        for size, d in raw["sizes"].items():
            out["sizes"][size] = d
            out["inter"].setdefault(size, {})[NO_MIXTURE] = d["runs"]
        for size, mixes in inter_runs(raw).items():
            out["inter"].setdefault(size, {}).update(
                {k: v for k, v in mixes.items() if k != NO_MIXTURE})
        out["mixture_order"] += [m for m in raw["mixture_order"]
                                 if m not in out["mixture_order"]]
    # sizes smallest first, whichever file held them (figure 1's steps, figure 2's "largest")
    by_size = sorted(out["sizes"], key=lambda k: out["sizes"][k]["n_params"])
    out["sizes"] = {k: out["sizes"][k] for k in by_size}
    out["inter"] = {k: out["inter"][k] for k in [*by_size, *out["inter"]] if k in out["inter"]}
    out["wall_s"] = max(r["wall_s"] for r in raws)
    if len(raws) > 1:
        out["args"] = {**raws[0]["args"], "argv": raws[0]["args"]["argv"],
                       "processes": [r["args"]["argv"] for r in raws]}
    return out


def zs(scores: dict[str, float], others: list[str]) -> float:
    return statistics.fmean(scores[c] for c in others)


def step_tests(raw, others) -> list[tuple[str, str, float, float]]:
    """Each size step: (smaller, larger, difference of mean zero-shot, Welch p over seeds)."""
    sizes = list(raw["sizes"])
    out = []
    for a, b in zip(sizes, sizes[1:]):
        za = [zs(r, others) for r in raw["sizes"][a]["runs"]]
        zb = [zs(r, others) for r in raw["sizes"][b]["runs"]]
        p = ttest_ind(zb, za, equal_var=False).pvalue if len(za) > 1 else float("nan")
        out.append((a, b, statistics.fmean(zb) - statistics.fmean(za), p))
    return out


def inter_runs(raw) -> dict[str, dict[str, list]]:
    """Figure 3's runs per size (older result files held one size under `mixtures`)."""
    return raw["inter"] if "inter" in raw else {raw["inter_size"]: raw["mixtures"]}


def intermediate_tests(mixtures, others) -> dict[str, dict[str, float]]:
    """Per intermediate task (of one size): mean and sd of zero-shot, difference to none, Welch
    p and its Holm-adjusted value over all the tasks compared."""
    base = [zs(r, others) for r in mixtures[NO_MIXTURE]]
    out = {}
    for name, runs in mixtures.items():
        if name == NO_MIXTURE or not runs:
            continue
        z = [zs(r, others) for r in runs]
        out[name] = {"mean": statistics.fmean(z), "sd": mean_sd(z)[1],
                     "delta": statistics.fmean(z) - statistics.fmean(base),
                     "p": ttest_ind(z, base, equal_var=False).pvalue if len(z) > 1 else 1.0}
    for name, p in holm({n: d["p"] for n, d in out.items()}).items():
        out[name]["p_holm"] = p
    return out


def best_single_vs_mixture(tests) -> dict:
    """The best single task and the best mixture (by mean zero-shot), where both were run."""
    singles = {n: t["mean"] for n, t in tests.items() if MIX not in n}
    mixes = {n: t["mean"] for n, t in tests.items() if MIX in n}
    if not singles or not mixes:
        return {}
    bs, bm = max(singles, key=singles.get), max(mixes, key=mixes.get)
    return {"best_single": bs, "best_mixture": bm,
            "mixture_minus_single": mixes[bm] - singles[bs]}


def summary(raw, others) -> dict:
    """The bench's figures as one JSON object (its last printed line)."""
    sizes = {s: statistics.fmean(zs(r, others) for r in d["runs"])
             for s, d in raw["sizes"].items()}
    inter = {}
    for size, mixtures in inter_runs(raw).items():
        tests = intermediate_tests(mixtures, others)
        inter[size] = {n: {k: t[k] for k in ("delta", "p", "p_holm")} for n, t in tests.items()}
        inter[size].update(best_single_vs_mixture(tests))
    return {"zero_shot_by_size": sizes, "chance": CHANCE,
            "size_steps": [{"from": a, "to": b, "delta": d, "p": p}
                           for a, b, d, p in step_tests(raw, others)],
            "intermediate": inter,
            "seeds": len(raw["settings"]["seeds"]), "wall_s": raw["wall_s"]}


def command(argv: list[str]) -> str:
    """The command line without where its outputs went."""
    shown, skip = [], False
    for a in argv:
        if skip or a == "--no-readme":
            skip = False
            continue
        if a in ("--json", "--storage", "--readme"):
            skip = True
            continue
        shown.append(a)
    return "python " + " ".join(["bench/transfer.py", *shown])


def render(raw, w, others) -> str:
    args = raw["args"]
    cmd = " and ".join(f"`{command(argv)}`" for argv in args.get("processes", [args["argv"]]))
    if "processes" in args:
        cmd += " (side by side, merged with `--render`)"
    st = raw["settings"]
    inter, tgt = st["intermediate"], st["target"]
    lines = [
        "### Zero-shot transfer in the synthetic world (`bench/transfer.py`)",
        "",
        f"Measured with {cmd} on CPU, {args['threads']} thread(s), {len(st['seeds'])} seeds "
        f"({st['seeds'][0]}..{st['seeds'][-1]}: target/intermediate seeds; one pretraining per size, shared through the stage "
        f"store), in {raw['wall_s'] / 60:.1f} min{raw.get('load_note', '')}; every run is a trial of the sweep runner "
        f"(`run_local`). Target: `{TARGET}` (3 classes, chance 33.3%), fine-tuned on English, "
        f"evaluated zero-shot on test in {', '.join(others)}. Pretrain: `syn_corpus`; target "
        f"{tgt['steps']} steps at lr {tgt['lr']}; intermediate {inter['steps']} steps at lr "
        f"{inter['lr']}; batch {st.get('batch_size', 32)}, max_length {st.get('max_length', 48)}. Accuracies "
        "in %, mean ± sd over seeds.",
        "",
        "**1 and 4. Zero-shot accuracy by model size** (mean over non-English languages)",
        "",
        "| size | params | pretrain steps | pretrain s | English | zero-shot | above chance |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, d in raw["sizes"].items():
        en = mean_sd([r["en"] for r in d["runs"]])
        z = mean_sd([zs(r, others) for r in d["runs"]])
        lines.append(f"| {size} | {d['n_params'] / 1e6:.3f}M | {d['pretrain_steps']} | "
                     f"{d['pretrain_s']:.0f} | {fmt(*en)} | {fmt(*z)} | "
                     f"{100 * (z[0] - CHANCE):+.1f} |")
    steps = step_tests(raw, others)
    lines += ["", "Size steps (Welch's t-test over seeds): " + "; ".join(
        f"{a} → {b}: {100 * d:+.1f} points, p = {p:.3g}" for a, b, d, p in steps) + "."]
    per_lang = {c: statistics.fmean(r[c] for d in raw["sizes"].values() for r in d["runs"])
                for c in others}
    largest = list(raw["sizes"])[-1]
    per_lang_l = {c: statistics.fmean(r[c] for r in raw["sizes"][largest]["runs"])
                  for c in others}
    rho = spearmanr([w.distance[c] for c in others], [per_lang[c] for c in others]).statistic
    rho_l = spearmanr([w.distance[c] for c in others],
                      [per_lang_l[c] for c in others]).statistic
    lines += ["", "**2. Transfer against language distance from English**", "",
              "| language | anchor | order | adj after | inflection | distance | "
              f"zero-shot (all sizes) | zero-shot ({largest}) |",
              "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |"]
    for c in others:
        lg = w.languages[c]
        lines.append(f"| {c} | {lg.anchor:.2f} | {lg.order} | {lg.adj_after} | "
                     f"{lg.inflection:.2f} | {lg.distance:.3f} | {100 * per_lang[c]:.1f} | "
                     f"{100 * per_lang_l[c]:.1f} |")
    lines += ["", f"Spearman ρ(distance, zero-shot) over the {len(others)} languages = "
                  f"**{rho:.2f}** (all sizes), {rho_l:.2f} ({largest})."]
    lines += ["", f"**3. English intermediate tasks** (intermediate {inter['steps']} steps at lr "
                  f"{inter['lr']}, then target; `a+b`: a 50/50 mixture)"]
    for size, mixtures in inter_runs(raw).items():
        lines += figure3(size, mixtures, raw["mixture_order"], others)
    lines += ["", f"Welch's t-test over seeds against `{NO_MIXTURE}`; Holm's correction over the "
                  "tasks compared at each size; a verdict needs Holm p < 0.05."]
    return "\n".join(lines)


def figure3(size, mixtures, order, others) -> list[str]:
    base = [zs(r, others) for r in mixtures[NO_MIXTURE]]
    en_base = mean_sd([r["en"] for r in mixtures[NO_MIXTURE]])
    tests = intermediate_tests(mixtures, others)
    lines = ["", f"{size}:", "",
             "| intermediate | English | zero-shot | Δ vs none | Welch p | Holm p | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
             f"| {NO_MIXTURE} | {fmt(*en_base)} | {fmt(*mean_sd(base))} | +0.0 | — | — | — |"]
    for name in order:
        if name not in tests:
            continue
        t = tests[name]
        en = mean_sd([r["en"] for r in mixtures[name]])
        verdict = ("**helps**" if t["delta"] > 0 else "**hurts**") if t["p_holm"] < 0.05 \
            else "no effect shown"
        lines.append(f"| {name} | {fmt(*en)} | {fmt(t['mean'], t['sd'])} | "
                     f"{100 * t['delta']:+.1f} | {t['p']:.3g} | {t['p_holm']:.3g} | {verdict} |")
    best = best_single_vs_mixture(tests)
    if best:
        lines += ["", f"Best single task `{best['best_single']}`, best mixture "
                      f"`{best['best_mixture']}`: mixture − single = "
                      f"{100 * best['mixture_minus_single']:+.1f} points."]
    return lines


def write_readme(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{section}\n{END}{tail}")


if __name__ == "__main__":
    main()
