"""A trial's plan: which stages run, with which config, under which store keys.

The plan is a pure function of the space, the model size and the trial's hyperparameters, so
`--dry-run` prints exactly what a launch would run, and two trials that agree on everything a
stage depends on get the same key for it. A key hashes the stage's whole normalized config,
including its parent's key: change anything upstream and every key downstream changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from raysweep.spec.space import ModelSpec, SweepSpec
from raysweep.run.store import stage_key

# Bump when a change to the training code changes what a stage computes, so old outputs are
# not reused for new code.
STAGE_FORMAT = 1


@dataclass(frozen=True)
class Stage:
    name: str  # pretrain | intermediate | target | eval
    config: dict[str, Any]
    key: str
    stored: bool  # shared through the stage store (pretrain, intermediate)


@dataclass(frozen=True)
class TrialPlan:
    sweep: str
    model: str
    n_params: int
    params: dict[str, Any]  # the trial's hyperparameters (lr_*, mixture, seed)
    mixture_kind: str
    stages: tuple[Stage, ...]
    workers: int
    cpus_per_worker: int
    gpus_per_worker: int
    world: dict[str, Any]
    data_dir: str | None
    model_spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialPlan":
        d = dict(d)
        d["stages"] = tuple(Stage(**s) for s in d["stages"])
        return cls(**d)

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def hparam_columns(self) -> dict[str, Any]:
        """The trial's hyperparameters as the results tables type them (`HPARAM_FIELDS`); a
        learning rate of a stage that does not run is null."""
        p = self.params
        return {
            "lr_pretrain": p.get("lr_pretrain") if self.stage("pretrain") else None,
            "lr_intermediate": p.get("lr_intermediate") if self.stage("intermediate") else None,
            "lr_target": p.get("lr_target"), "mixture": p.get("mixture", "none"),
            "mixture_kind": self.mixture_kind, "seed": int(p.get("seed", 0)),
        }


def model_identity(spec: SweepSpec, m: ModelSpec, world: dict[str, Any]) -> dict[str, Any]:
    """What determines a model's initial weights."""
    if m.hf is not None:
        return {"hf": m.hf}
    from raysweep.model.task_model import TINY_CONFIGS

    return {"tiny": m.tiny, "shape": TINY_CONFIGS[m.tiny], "world": world}


@lru_cache(maxsize=None)
def _vocab_size(world_json: str) -> int:
    import json

    from raysweep.data import build_tokenizer

    return len(build_tokenizer(json.loads(world_json)))


def n_params(spec: SweepSpec, m: ModelSpec) -> int:
    if m.n_params is not None:
        return m.n_params
    import json

    from raysweep.data import normalize_world
    from raysweep.model.task_model import count_params, tiny_config

    world = normalize_world(spec.world)
    return count_params(tiny_config(m.tiny, _vocab_size(json.dumps(world, sort_keys=True))))


def pretrain_steps(m: ModelSpec) -> int:
    from raysweep.model.task_model import TINY_CONFIGS

    return m.pretrain_steps or TINY_CONFIGS[m.tiny]["pretrain_steps"]


def build_plan(spec: SweepSpec, m: ModelSpec, params: dict[str, Any]) -> TrialPlan:
    from raysweep.data import normalize_world

    world = normalize_world(spec.world) if m.tiny else {}
    st = spec.stages
    seed = int(params.get("seed", 0))
    mixture = params.get("mixture", "none")
    common = {"format": STAGE_FORMAT, "data_dir": spec.data_dir}
    stages: list[Stage] = []

    def add(name: str, config: dict[str, Any], stored: bool) -> str:
        config = {"stage": name, **common, **config}
        key = stage_key(config)
        stages.append(Stage(name, config, key, stored))
        return key

    parent = {"model": model_identity(spec, m, world)}
    if m.tiny is not None:
        p = st.pretrain
        key = add("pretrain", {**parent, "corpus": p.corpus, "lr": params.get("lr_pretrain", p.lr),
                               "steps": pretrain_steps(m), "batch_size": p.batch_size,
                               "max_length": p.max_length, "seed": p.seed,
                               "log_every": p.log_every}, stored=True)
        parent = {"parent": key}
    mix = spec.mixtures[mixture]
    if mix.tasks:
        i = st.intermediate
        key = add("intermediate", {**parent, "mixture": dict(sorted(mix.tasks.items())),
                                   "sampler": i.sampler, "lr": params["lr_intermediate"],
                                   "steps": i.steps, "batch_size": i.batch_size,
                                   "max_length": i.max_length, "warmup_frac": i.warmup_frac,
                                   "log_every": i.log_every, "seed": seed}, stored=True)
        parent = {"parent": key}
    t = st.target
    key = add("target", {**parent, "tasks": list(t.tasks), "lr": params["lr_target"],
                         "steps": t.steps, "batch_size": t.batch_size,
                         "max_length": t.max_length, "warmup_frac": t.warmup_frac,
                         "log_every": t.log_every, "eval_every": t.eval_every or t.steps,
                         "seed": seed}, stored=False)
    add("eval", {"parent": key, "languages": eval_languages(spec),
                 "batch_size": st.eval.batch_size, "max_examples": st.eval.max_examples},
        stored=False)
    return TrialPlan(
        sweep=spec.name, model=m.name, n_params=n_params(spec, m),
        params=dict(params), mixture_kind=spec.mixture_kind(mixture), stages=tuple(stages),
        workers=spec.workers(m), cpus_per_worker=spec.cpus_per_worker(m),
        gpus_per_worker=spec.gpus_per_worker(m), world=world, data_dir=spec.data_dir,
        model_spec=m.model_dump(mode="json"),
    )


def eval_languages(spec: SweepSpec) -> dict[str, list[str]]:
    from raysweep.tasks import get_task

    langs = spec.stages.eval.languages
    out = {}
    for name in spec.stages.target.tasks:
        if isinstance(langs, dict):
            out[name] = list(langs.get(name, get_task(name).languages))
        elif isinstance(langs, list):
            out[name] = list(langs)
        else:
            out[name] = list(get_task(name).languages)
    return out

