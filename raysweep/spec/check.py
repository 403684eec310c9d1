"""Semantic checks of a parsed space that pydantic cannot do: names exist (tasks, tiny sizes,
languages, mixtures), ranges make sense, batches divide, resources fit the cluster."""

from __future__ import annotations

import math
from pathlib import Path

from raysweep.spec.space import SEARCHED, ParamSpec, SpaceError, SweepSpec

def check(spec: SweepSpec, file: Path, cluster_cpus: int | None = None,
          cluster_gpus: int | None = None) -> None:
    """Semantic checks pydantic cannot do: names exist, ranges make sense, resources fit."""
    # Imported here: the registries are only needed once a space is checked.
    from raysweep.data.config import normalize_world
    from raysweep.model.args import TINY_SIZES
    from raysweep.tasks import get_task

    def task(name: str, path: str, role: str | None = None):
        try:
            t = get_task(name)
        except KeyError as e:
            raise SpaceError(file, path, str(e.args[0])) from None
        if role and role not in t.roles:
            raise SpaceError(file, path, f"task {name!r} has roles {sorted(t.roles)}, not {role!r}")
        return t

    names = [m.name for m in spec.models]
    if len(set(names)) != len(names):
        raise SpaceError(file, "models", f"model names must be unique (got {names})")
    for i, m in enumerate(spec.models):
        if m.tiny is not None and m.tiny not in TINY_SIZES:
            raise SpaceError(file, f"models.{i}.tiny", f"unknown tiny config {m.tiny!r}; "
                             f"allowed: {', '.join(TINY_SIZES)}")
        if m.hf is None and spec.stages.pretrain is None:
            raise SpaceError(file, "stages.pretrain", f"model {m.name!r} is a from-scratch tiny "
                             "model and needs a pretrain stage")
    st = spec.stages
    if st.pretrain:
        task(st.pretrain.corpus, "stages.pretrain.corpus", "pretrain")
    for i, name in enumerate(st.target.tasks):
        task(name, f"stages.target.tasks.{i}", "target")
    for mname, mix in spec.mixtures.items():
        for tname in mix.tasks:
            task(tname, f"mixtures.{mname}.tasks.{tname}", "intermediate")
        if mix.tasks and st.intermediate is None:
            raise SpaceError(file, f"mixtures.{mname}", "a mixture with tasks needs "
                             "stages.intermediate (steps, batch_size, ...)")
    langs = st.eval.languages
    if isinstance(langs, dict):
        for tname, ls in langs.items():
            if tname not in st.target.tasks:
                raise SpaceError(file, f"stages.eval.languages.{tname}", f"not a target task; "
                                 f"allowed: {', '.join(st.target.tasks)}")
            _check_langs(file, f"stages.eval.languages.{tname}", task(tname, ""), ls)
    elif isinstance(langs, list):
        for tname in st.target.tasks:
            _check_langs(file, "stages.eval.languages", task(tname, ""), langs)
    try:
        normalize_world(spec.world)
    except (KeyError, ValueError) as e:
        raise SpaceError(file, "world", str(e.args[0] if e.args else e)) from None

    for key, p in spec.search.params.items():
        path = f"search.params.{key}"
        if key not in SEARCHED:
            raise SpaceError(file, path, f"not a searchable hyperparameter; allowed: "
                             f"{', '.join(SEARCHED)}")
        if key.startswith("lr_"):
            _check_lr(file, path, p)
        if key == "mixture":
            for j, v in enumerate(p.values or []):
                if v not in spec.mixtures:
                    raise SpaceError(file, f"{path}.values.{j}", f"unknown mixture {v!r}; "
                                     f"allowed: {', '.join(spec.mixtures)}")
        if key in ("mixture", "seed") and p.values is None:
            raise SpaceError(file, path, "give 'values' (a list)")
        if key == "lr_intermediate" and not (st.intermediate and any(
                m.tasks for m in spec.mixtures.values())):
            raise SpaceError(file, path, "searched, but no intermediate stage runs")
        if key == "lr_pretrain" and not st.pretrain:
            raise SpaceError(file, path, "searched, but there is no pretrain stage")
        if spec.search.algorithm == "grid" and p.loguniform is not None and p.grid is None:
            raise SpaceError(file, f"{path}.loguniform", "a grid search needs 'values' or "
                             "'loguniform' with 'grid: k'; a bare range is for algorithm: optuna")
    check_search(spec, file)
    if "lr_target" not in spec.search.params:
        raise SpaceError(file, "search.params.lr_target", "required: the target learning rate "
                         "(values or loguniform)")
    if "lr_intermediate" not in spec.search.params and any(m.tasks for m in spec.mixtures.values()):
        raise SpaceError(file, "search.params.lr_intermediate", "required when a mixture has "
                         "tasks: the intermediate learning rate (values or loguniform)")

    for m in spec.models:  # every rank takes an equal slice of each global batch
        for stage in ("intermediate", "target"):
            s = getattr(st, stage)
            if s is not None and s.batch_size % spec.workers(m):
                raise SpaceError(file, f"stages.{stage}.batch_size", f"{s.batch_size} does not "
                                 f"divide by {spec.workers(m)} workers of model {m.name!r}")
    _check_knobs(spec, file)
    if cluster_cpus is not None:
        check_resources(spec, file, cluster_cpus, cluster_gpus)


def check_resources(spec: SweepSpec, file: Path, cpus: int, gpus: int | None) -> None:
    """Every model's trial must fit the cluster, or its trials would wait forever."""
    for i, m in enumerate(spec.models):
        need_cpu = spec.workers(m) * spec.cpus_per_worker(m)
        if need_cpu > cpus:
            raise SpaceError(file, f"models.{i}.workers" if m.workers else "resources.workers",
                             f"model {m.name!r} needs {spec.workers(m)} workers x "
                             f"{spec.cpus_per_worker(m)} CPUs = {need_cpu} CPUs per trial; the "
                             f"cluster offers {cpus}; allowed: at most {int(cpus // spec.cpus_per_worker(m))} workers")
        need_gpu = spec.workers(m) * spec.gpus_per_worker(m)
        if gpus is not None and need_gpu > gpus:
            raise SpaceError(file, f"models.{i}.workers" if m.workers else "resources.workers",
                             f"model {m.name!r} needs {need_gpu} GPUs per trial; the cluster "
                             f"offers {gpus}")


def _check_lora_targets(file: Path, path: str, lora) -> None:
    """Every LoRA target names a linear module of a LLaMA decoder layer."""
    from raysweep.model.args import LLAMA_LINEAR_MODULES

    for j, t in enumerate(lora.target_modules if lora else []):
        if t not in LLAMA_LINEAR_MODULES:
            raise SpaceError(file, f"{path}.lora.target_modules.{j}",
                             f"{t!r} matches no module of a LLaMA decoder layer; allowed: "
                             f"{', '.join(LLAMA_LINEAR_MODULES)}")


def _check_knobs(spec: SweepSpec, file: Path) -> None:
    """Micro batches divide each rank's share of the global batch; LoRA targets exist."""
    for stage in ("pretrain", "intermediate", "target"):
        s = getattr(spec.stages, stage)
        if s is None:
            continue
        for m in spec.models:
            per_rank = s.batch_size // spec.workers(m)
            if s.micro_batch_size is not None and per_rank % s.micro_batch_size:
                raise SpaceError(file, f"stages.{stage}.micro_batch_size", f"{s.micro_batch_size}"
                                 f" does not divide the per-rank batch {per_rank} (batch_size "
                                 f"{s.batch_size} over {spec.workers(m)} workers of model "
                                 f"{m.name!r}); allowed: a divisor of {per_rank}")
        _check_lora_targets(file, f"stages.{stage}.finetune",
                            getattr(getattr(s, "finetune", "full"), "lora", None))
    for i, m in enumerate(spec.models):  # a size's own finetune (overrides the stages')
        _check_lora_targets(file, f"models.{i}.finetune", getattr(m.finetune, "lora", None))
    r = spec.search.params.get("lora_r")
    if r is not None:
        if not any(getattr(getattr(spec.stages, k), "finetune", "full") != "full"
                   for k in ("intermediate", "target") if getattr(spec.stages, k)) and \
                all(m.finetune in (None, "full") for m in spec.models):
            raise SpaceError(file, "search.params.lora_r", "searched, but no stage has "
                             "finetune: {lora: ...}")
        for j, v in enumerate(r.values or []):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise SpaceError(file, f"search.params.lora_r.values.{j}", f"a LoRA rank must "
                                 f"be a positive integer (got {v!r})")


# Searched values that change an upstream (stored) stage; lr_target changes only its own trial.
UPSTREAM = ("lr_pretrain", "lr_intermediate", "mixture", "seed", "lora_r")


def check_search(spec: SweepSpec, file: Path) -> None:
    """Mixing strategies against their mixtures, searched mixtures, log grids, stage sharing
    and the ladder (raysweep.spec.mixtures, raysweep.plan.grid)."""
    st, s = spec.stages, spec.search
    for mname, mix in spec.mixtures.items():
        where, strategy = (f"mixtures.{mname}.sampler", mix.sampler) if mix.sampler else \
            ("stages.intermediate.sampler", st.intermediate.sampler if st.intermediate else None)
        ends = strategy.tasks() if strategy is not None and mix.tasks else []
        if len(ends) == 2 and set(ends[0][1]) != set(ends[1][1]):
            raise SpaceError(file, f"{where}.{strategy.name}.end", "the endpoints name different "
                             f"tasks ({sorted(ends[0][1])} vs {sorted(ends[1][1])}); allowed: "
                             "the same tasks at both ends")
        for field, weights in ends:
            path = f"{where}.{strategy.name}.{field}"
            if set(weights) != set(mix.tasks):
                raise SpaceError(file, path, f"names {sorted(weights)}; allowed: the tasks of "
                                 f"mixture {mname!r}, each once: {sorted(mix.tasks)}")
            if not any(weights.values()):
                raise SpaceError(file, path, "every weight is 0; allowed: weights >= 0, at "
                                 "least one > 0")
        if mix.simplex is not None:
            path = f"mixtures.{mname}.simplex"
            if s.algorithm != "optuna":
                raise SpaceError(file, path, "searched weights need search.algorithm: optuna")
            if len(mix.tasks) < 2 or any(w != 1.0 for w in mix.tasks.values()):
                raise SpaceError(file, f"mixtures.{mname}.tasks", "a searched mixture lists its "
                                 "candidate tasks, at least 2, each with weight 1.0 (the search "
                                 "draws the weights)")
    for key, p in s.params.items():
        path = f"search.params.{key}"
        if p.grid is not None and p.loguniform is None:
            raise SpaceError(file, f"{path}.grid", "'grid: k' goes with 'loguniform' (k "
                             "log-spaced points); 'values' are already finite")
        if s.share_stages and key in UPSTREAM and p.loguniform is not None and p.grid is None:
            raise SpaceError(file, f"{path}.loguniform", "a continuous range for an upstream "
                             "stage gives every trial its own stage; with search.share_stages: "
                             "true give 'grid: k' (k log-spaced points) or 'values'")
    if s.ladder and s.algorithm != "optuna":
        raise SpaceError(file, "search.ladder", "the ladder narrows Optuna's ranges; allowed "
                         "with search.algorithm: optuna")


def _check_langs(file: Path, path: str, task, langs: list[str]) -> None:
    for j, lang in enumerate(langs):
        if lang not in task.languages:
            raise SpaceError(file, f"{path}.{j}", f"unknown language {lang!r} for task "
                             f"{task.name!r}; allowed: {', '.join(task.languages)}")


def _check_lr(file: Path, path: str, p: ParamSpec) -> None:
    if p.loguniform is not None:
        lo, hi = p.loguniform
        if not (lo > 0 and hi > 0):
            raise SpaceError(file, f"{path}.loguniform", f"bounds must be positive (got [{lo}, {hi}])")
        if lo >= hi:
            raise SpaceError(file, f"{path}.loguniform", f"range is inverted or empty: low {lo} "
                             f">= high {hi}; allowed: 0 < low < high")
    for j, v in enumerate(p.values or []):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SpaceError(file, f"{path}.values.{j}", f"a learning rate must be a positive "
                             f"number (got {v!r})")
