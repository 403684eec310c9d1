"""Zero-shot transfer in the synthetic world, with the engine's own training loops.

Measures, with the tiny LLaMA sizes on CPU (one process, `torch.set_num_threads(1)` unless
--threads says otherwise):
1. zero-shot accuracy on syn_xnli in the non-English languages after pretrain -> target,
   against chance (1/3), per size;
2. the Spearman rank correlation between a language's distance from English and its zero-shot
   accuracy (per-language means over sizes and seeds);
3. the effect of each English intermediate task on the mean zero-shot score (mean +- sd over
   >= 3 seeds), against no intermediate task, at one size;
4. the mean zero-shot score per size.
Then rewrites the README section between `<!-- transfer:start -->` and `<!-- transfer:end -->`.

Pretraining is done once per size (seed 0) and shared; the seeds of figure 3 vary the
intermediate and target training (initialization of the heads, data order).

    python bench/transfer.py            # full run (about 15 min on 2 shared cores)
    python bench/transfer.py --quick    # a smaller run (about 4 min), README not touched
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr, ttest_ind

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raysweep.data.experiment import INTERMEDIATE, TARGET, pretrain, transfer_run  # noqa: E402
from raysweep.data.world import get_world, normalize_world  # noqa: E402
from raysweep.model.task_model import TINY_CONFIGS  # noqa: E402

START, END = "<!-- transfer:start -->", "<!-- transfer:end -->"
CHANCE = 1 / 3

# English intermediate mixtures compared in figure 3 (name -> mixture weights).
MIXTURES = {
    "none": {},
    "syn_nli_en": {"syn_nli_en": 1.0},
    "syn_hypernym": {"syn_hypernym": 1.0},
    "syn_antonym": {"syn_antonym": 1.0},
    "syn_script": {"syn_script": 1.0},
    "syn_haslocation": {"syn_haslocation": 1.0},
    "syn_random": {"syn_random": 1.0},
    "syn_lexparity": {"syn_lexparity": 1.0},
    "syn_lm_en": {"syn_lm_en": 1.0},
}
QUICK_MIXTURES = ("none", "syn_nli_en", "syn_random")


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m: float, s: float) -> str:
    return f"{100 * m:.1f} ± {100 * s:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller run; README untouched")
    ap.add_argument("--sizes", nargs="+", default=["llama-tiny-xs", "llama-tiny-s",
                                                   "llama-tiny-m"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--inter-size", default=None, help="size for figure 3 (default: largest)")
    ap.add_argument("--mixtures", nargs="+", default=None)
    ap.add_argument("--inter-steps", type=int, default=INTERMEDIATE["steps"])
    ap.add_argument("--inter-lr", type=float, default=INTERMEDIATE["lr"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--world", default="{}", help="world overrides, JSON")
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--render", default=None,
                    help="re-render the section from a --json file of an earlier run (no runs)")
    args = ap.parse_args()
    if args.render:
        raw = json.loads(Path(args.render).read_text())
        w = get_world(raw["world"])
        others = [c for c in w.codes if c != "en"]
        section = render(raw, w, others, raw["args"], raw["inter_size"], raw["mixture_order"])
        print(section)
        if not args.no_readme and not raw["args"]["quick"]:
            write_readme(Path(args.readme), section)
        return
    torch.set_num_threads(args.threads)
    world = normalize_world(json.loads(args.world))
    w = get_world(world)
    others = [c for c in w.codes if c != "en"]
    seeds = list(range(2 if args.quick and args.seeds == 3 else args.seeds))
    mixtures = args.mixtures or (QUICK_MIXTURES if args.quick else tuple(MIXTURES))
    inter_size = args.inter_size or args.sizes[-1]
    inter = dict(INTERMEDIATE, steps=args.inter_steps, lr=args.inter_lr)
    t0 = time.perf_counter()
    raw: dict = {"world": world, "sizes": {}, "mixtures": {}, "settings": {
        "pretrain_steps": {s: TINY_CONFIGS[s]["pretrain_steps"] for s in args.sizes},
        "intermediate": inter, "target": TARGET, "seeds": seeds}}

    # figures 1, 2, 4: pretrain -> target, per size and seed
    pretrained = {}
    for size in args.sizes:
        t = time.perf_counter()
        pretrained[size] = pretrain(size, world, seed=0)
        pt = time.perf_counter() - t
        runs = []
        for seed in seeds:
            r = transfer_run(size, world, seed=seed, pretrained=copy.deepcopy(pretrained[size]))
            runs.append(r)
            print(f"[{time.perf_counter() - t0:6.0f}s] {size} seed {seed}: en "
                  f"{r.scores['en']:.3f} zero-shot {r.zero_shot:.3f} "
                  + " ".join(f"{k}={v:.2f}" for k, v in r.scores.items() if k != "en"),
                  flush=True)
        raw["sizes"][size] = {"n_params": runs[0].n_params, "pretrain_s": pt,
                              "target_s": statistics.fmean(r.times["target"] for r in runs),
                              "runs": [r.scores for r in runs]}
    raw["mixtures"]["none"] = raw["sizes"][inter_size]["runs"]

    # figure 3: English intermediate tasks at one size
    for name in mixtures:
        if name == "none":
            continue
        runs = []
        for seed in seeds:
            r = transfer_run(inter_size, world, seed=seed, mixture=MIXTURES[name],
                             pretrained=copy.deepcopy(pretrained[inter_size]), inter=inter)
            runs.append(r.scores)
            print(f"[{time.perf_counter() - t0:6.0f}s] {inter_size} +{name} seed {seed}: en "
                  f"{r.scores['en']:.3f} zero-shot {r.zero_shot:.3f}", flush=True)
        raw["mixtures"][name] = runs
    raw["wall_s"] = time.perf_counter() - t0
    raw["args"] = {"quick": args.quick, "threads": args.threads, "argv": sys.argv[1:]}
    raw["inter_size"], raw["mixture_order"] = inter_size, list(mixtures)

    section = render(raw, w, others, raw["args"], inter_size, mixtures)
    print(section)
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    if not args.quick and not args.no_readme:
        write_readme(Path(args.readme), section)
        print(f"README section rewritten: {args.readme}")


def zs(scores: dict[str, float], others: list[str]) -> float:
    return statistics.fmean(scores[c] for c in others)


def render(raw, w, others, args, inter_size, mixtures) -> str:
    cmd = "python " + " ".join(["bench/transfer.py", *(a for a in args["argv"]
                                                        if not a.startswith("/tmp"))])
    cmd = cmd.replace(" --json", "")
    inter = raw["settings"]["intermediate"]
    lines = [
        "### Zero-shot transfer in the synthetic world (`bench/transfer.py`)",
        "",
        f"Measured with `{cmd}` on CPU, {args['threads']} thread(s), "
        f"{len(raw['settings']['seeds'])} seeds (target/intermediate seeds; one pretraining "
        f"per size), in {raw['wall_s'] / 60:.1f} min. Target: `syn_xnli` (3 classes, chance "
        f"33.3%), fine-tuned on English, evaluated zero-shot on test in "
        f"{', '.join(others)}. Pretrain: `syn_corpus`; target {TARGET['steps']} steps at "
        f"lr {TARGET['lr']}; intermediate {inter['steps']} steps at lr "
        f"{inter['lr']}; batch 32, max_length 48. Accuracies in %, mean ± sd over "
        "seeds.",
        "",
        "**1 and 4. Zero-shot accuracy by model size** (mean over non-English languages)",
        "",
        "| size | params | pretrain steps | pretrain s | English | zero-shot | above chance |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    means = []
    for size, d in raw["sizes"].items():
        en = mean_sd([r["en"] for r in d["runs"]])
        z = mean_sd([zs(r, others) for r in d["runs"]])
        means.append(z[0])
        lines.append(f"| {size} | {d['n_params'] / 1e6:.3f}M | "
                     f"{raw['settings']['pretrain_steps'][size]} | {d['pretrain_s']:.0f} | "
                     f"{fmt(*en)} | {fmt(*z)} | {100 * (z[0] - CHANCE):+.1f} |")
    mono = all(b > a for a, b in zip(means, means[1:]))
    rho_size = spearmanr(range(len(means)), means).statistic if len(means) > 2 else float("nan")
    lines += ["", f"Mean zero-shot rises with size at every step: **{'yes' if mono else 'no'}** "
                  f"(Spearman ρ(size rank, zero-shot) = {rho_size:.2f})."]
    # figure 2
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
    lines += ["", f"Spearman ρ(distance, zero-shot) = **{rho:.2f}** (all sizes), "
                  f"{rho_l:.2f} ({largest})."]
    # figure 3
    base = [zs(r, others) for r in raw["mixtures"]["none"]]
    b_m, b_s = mean_sd(base)
    lines += ["", f"**3. English intermediate tasks** ({inter_size}; intermediate "
                  f"{inter['steps']} steps at lr {inter['lr']}, then target)", "",
              "| intermediate | English | zero-shot | Δ vs none | Welch p | beyond noise |",
              "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name in mixtures:
        runs = raw["mixtures"].get(name)
        if not runs:
            continue
        z = [zs(r, others) for r in runs]
        m, s = mean_sd(z)
        en = mean_sd([r["en"] for r in runs])
        p = ttest_ind(z, base, equal_var=False).pvalue if name != "none" else float("nan")
        beyond = "—" if name == "none" else (
            "**up**" if m - b_m > b_s and p < 0.05 else
            "**down**" if b_m - m > b_s and p < 0.05 else "no")
        if beyond != "no" and abs(m - b_m) <= s:
            beyond += " (not beyond its own sd)"
        lines.append(f"| {name} | {fmt(*en)} | {fmt(m, s)} | {100 * (m - b_m):+.1f} | "
                     f"{p:.3f} | {beyond} |" if name != "none" else
                     f"| {name} | {fmt(*en)} | {fmt(m, s)} | +0.0 | — | — |")
    lines += ["", "'beyond noise': the difference of means exceeds the seed-to-seed sd of "
                  "the no-intermediate baseline *and* Welch's t-test over seeds gives p < 0.05; "
                  "'(not beyond its own sd)' flags a task whose own seed sd is larger than "
                  "the difference."]
    if raw.get("notes"):
        lines += [""] + [f"- {n}" for n in raw["notes"]]
    return "\n".join(lines)


def write_readme(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else f"{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{section}\n{END}{tail}")


if __name__ == "__main__":
    main()
