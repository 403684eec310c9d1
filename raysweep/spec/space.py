"""Search spaces: YAML -> a typed, validated `SweepSpec`.

Every check that can fail on user input happens here, before Ray starts: unknown keys, wrong
types, unknown tasks or tiny configs, bad learning-rate ranges, and more workers per trial than
the cluster has. Each failure is one `SpaceError` naming the file, the key path and what is
allowed; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
SEARCHED = ("lr_pretrain", "lr_intermediate", "lr_target", "mixture", "seed")


class SpaceError(ValueError):
    """Bad user input in a search space: message = file: key.path: problem; allowed."""

    def __init__(self, file: str | Path, path: str, problem: str):
        self.file, self.path, self.problem = str(file), path, problem
        super().__init__(f"{file}: {path}: {problem}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class ModelSpec(_Strict):
    """One point on the scaling axis: a named tiny config (CPU), or an HF id / local path."""

    name: str
    tiny: str | None = None
    hf: str | None = None
    n_params: PositiveInt | None = None  # required for hf models; computed for tiny ones
    workers: PositiveInt | None = None  # overrides resources.workers
    cpus_per_worker: PositiveInt | None = None
    gpus_per_worker: Annotated[int, Field(ge=0)] | None = None
    pretrain_steps: PositiveInt | None = None  # overrides the tiny config's budget

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.tiny is None) == (self.hf is None):
            raise ValueError("give exactly one of 'tiny' (a named tiny config) or 'hf' (an id or path)")
        if self.hf is not None and self.n_params is None:
            raise ValueError("an 'hf' model needs 'n_params' (parameter count)")
        return self


class PretrainSpec(_Strict):
    corpus: str
    lr: PositiveFloat = 3e-3
    batch_size: PositiveInt = 32
    max_length: PositiveInt = 64
    seed: int = 0
    log_every: PositiveInt = 25


class TrainStageSpec(_Strict):
    steps: PositiveInt
    batch_size: PositiveInt = 32
    max_length: PositiveInt = 64
    log_every: PositiveInt = 25
    warmup_frac: Annotated[float, Field(ge=0, lt=1)] = 0.1


class IntermediateSpec(TrainStageSpec):
    sampler: Literal["proportional", "uniform", "temperature"] = "proportional"


class TargetSpec(TrainStageSpec):
    tasks: Annotated[list[str], Field(min_length=1)]
    eval_every: PositiveInt | None = None  # English dev evaluations (Tune reports) per task


class EvalSpec(_Strict):
    # "all" = every language a task declares; or a list applied to every task; or per task.
    languages: Literal["all"] | list[str] | dict[str, list[str]] = "all"
    batch_size: PositiveInt = 64
    max_examples: PositiveInt | None = None  # per (task, language, split), for quick runs


class StagesSpec(_Strict):
    pretrain: PretrainSpec | None = None
    intermediate: IntermediateSpec | None = None
    target: TargetSpec
    eval: EvalSpec = EvalSpec()


class MixtureSpec(_Strict):
    tasks: dict[str, PositiveFloat] = {}  # task -> weight; empty = no intermediate stage
    kind: Literal["none", "english", "multilingual"] | None = None  # derived when omitted


class ParamSpec(_Strict):
    values: Annotated[list[Any], Field(min_length=1)] | None = None
    loguniform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _one(self) -> "ParamSpec":
        if (self.values is None) == (self.loguniform is None):
            raise ValueError("give exactly one of 'values' (a list) or 'loguniform' ([low, high])")
        return self


class SchedulerSpec(_Strict):
    name: Literal["asha", "none"] = "none"
    grace_period: PositiveInt = 1
    reduction_factor: Annotated[float, Field(gt=1)] = 2.0


class SearchSpec(_Strict):
    algorithm: Literal["grid", "optuna"] = "grid"
    num_samples: PositiveInt = 1  # optuna: trials per size; grid: repeats of the grid
    mode: Literal["max", "min"] = "max"
    scheduler: SchedulerSpec = SchedulerSpec()
    max_concurrent_trials: PositiveInt | None = None  # default: what the cluster fits
    seed: int = 0
    params: dict[str, ParamSpec]


class ResourcesSpec(_Strict):
    workers: PositiveInt = 2
    cpus_per_worker: PositiveInt = 1
    gpus_per_worker: Annotated[int, Field(ge=0)] = 0
    cluster_cpus: PositiveInt | None = None  # default: this machine's cores (local Ray)
    cluster_gpus: Annotated[int, Field(ge=0)] | None = None


class SweepSpec(_Strict):
    name: str
    description: str = ""
    world: dict[str, Any] = {}  # synthetic-world overrides (tiny models)
    data_dir: str | None = None  # local copies of real datasets, in their own schema
    models: Annotated[list[ModelSpec], Field(min_length=1)]
    stages: StagesSpec
    mixtures: dict[str, MixtureSpec] = {"none": MixtureSpec()}
    search: SearchSpec
    resources: ResourcesSpec = ResourcesSpec()

    def workers(self, m: ModelSpec) -> int:
        return m.workers or self.resources.workers

    def cpus_per_worker(self, m: ModelSpec) -> int:
        return m.cpus_per_worker or self.resources.cpus_per_worker

    def gpus_per_worker(self, m: ModelSpec) -> int:
        return self.resources.gpus_per_worker if m.gpus_per_worker is None else m.gpus_per_worker

    def model(self, name: str) -> ModelSpec:
        return next(m for m in self.models if m.name == name)

    def mixture_kind(self, name: str) -> str:
        mix = self.mixtures[name]
        if mix.kind:
            return mix.kind
        if not mix.tasks:
            return "none"
        from raysweep.tasks import get_task

        langs = {lang for t in mix.tasks for lang in get_task(t).train_languages}
        return "english" if langs <= {"en"} else "multilingual"

    @cached_property
    def normalized(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --- loading ------------------------------------------------------------------------------------


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return SPACES_DIR / f"{name_or_path}.yaml"


def _loc(loc: tuple) -> str:
    return ".".join(str(x) for x in loc if not str(x).startswith("function-")) or "<top>"


def _pydantic_error(file: Path, err: ValidationError) -> SpaceError:
    e = err.errors()[0]
    loc = tuple(x for x in e["loc"] if x not in ("function-after",))
    problem = e["msg"]
    if e["type"] == "extra_forbidden":
        parent = _locate_model(loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else "see the README's search-space table"
        problem = f"unknown key {loc[-1]!r}; allowed keys: {allowed}"
    elif e["type"] == "missing":
        problem = "required key is missing"
    elif "input" in e and e["type"] not in ("value_error",):
        problem = f"{problem} (got {e['input']!r})"
    return SpaceError(file, _loc(loc), problem)


def _locate_model(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class at a key path (for listing the allowed keys)."""
    model: type[BaseModel] = SweepSpec
    parts = [p for p in loc if not isinstance(p, int)]
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return None
        nxt = _model_in(field.annotation)
        if nxt is None:
            return None
        if get_origin(field.annotation) is dict and parts:  # mixtures.<name>: skip the name
            parts.pop(0)
        model = nxt
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation (`M`, `M | None`, `list[M]`, `dict[str, M]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def load_space(name_or_path: str, cluster_cpus: int | None = None,
               cluster_gpus: int | None = None) -> tuple[SweepSpec, Path]:
    """Parse and validate a space. `cluster_*`: what the cluster offers, when known (resources
    are checked only then: a dry run on a laptop plans a GPU cluster's sweep)."""
    file = resolve(name_or_path)
    if not file.exists():
        known = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise SpaceError(file, "<file>", f"no such search space; known spaces: {', '.join(known)}")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as e:
        raise SpaceError(file, "<file>", f"not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpaceError(file, "<top>", "a search space is a mapping of keys")
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise _pydantic_error(file, e) from None
    check(spec, file, cluster_cpus, cluster_gpus)
    return spec, file


def local_resources(spec: SweepSpec) -> tuple[int, int]:
    """What a local Ray started by `launch` will offer: this machine's cores and GPUs."""
    cpus = spec.resources.cluster_cpus or os.cpu_count() or 1
    gpus = spec.resources.cluster_gpus
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    return cpus, gpus


def check(spec: SweepSpec, file: Path, cluster_cpus: int | None = None,
          cluster_gpus: int | None = None) -> None:
    """Semantic checks pydantic cannot do: names exist, ranges make sense, resources fit."""
    from raysweep.data import normalize_world
    from raysweep.model.task_model import TINY_CONFIGS
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
        if m.tiny is not None and m.tiny not in TINY_CONFIGS:
            raise SpaceError(file, f"models.{i}.tiny", f"unknown tiny config {m.tiny!r}; "
                             f"allowed: {', '.join(TINY_CONFIGS)}")
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
        if spec.search.algorithm == "grid" and p.loguniform is not None:
            raise SpaceError(file, f"{path}.loguniform", "a grid search needs 'values'; "
                             "'loguniform' is for algorithm: optuna")
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
                             f"cluster offers {cpus}; allowed: at most {cpus // spec.cpus_per_worker(m)} workers")
        need_gpu = spec.workers(m) * spec.gpus_per_worker(m)
        if gpus is not None and need_gpu > gpus:
            raise SpaceError(file, f"models.{i}.workers" if m.workers else "resources.workers",
                             f"model {m.name!r} needs {need_gpu} GPUs per trial; the cluster "
                             f"offers {gpus}")


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
