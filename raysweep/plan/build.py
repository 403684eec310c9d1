"""A trial's plan: which stages run, with which typed config, under which store keys.

The plan is a pure function of the space, the model size and the trial's hyperparameters, so
`--dry-run` prints exactly what a launch would run, and two trials that agree on everything a
stage depends on get the same key for it (`raysweep.plan.stages`). No torch here: parameter
counts come from the model's own arithmetic (`raysweep.model.args`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raysweep.data.config import normalize_world
from raysweep.data.world import get_world
from raysweep.model.args import TINY_SIZES, tiny_args
from raysweep.plan.grid import MIXTURE_WEIGHTS, trial_params
from raysweep.plan.stages import (EvalConfig, IntermediateConfig, PretrainConfig, StageConfig,
                                  TargetConfig)
from raysweep.spec.names import NO_MIXTURE
from raysweep.spec.space import ModelSpec, SweepSpec


@dataclass(frozen=True)
class TrialPlan:
    sweep: str
    model: str
    n_params: int
    params: dict[str, Any]  # the trial's hyperparameters (lr_*, mixture, seed)
    mixture_kind: str
    stages: tuple[StageConfig, ...]
    workers: int
    cpus_per_worker: int | float  # a fraction shares a core (raysweep.spec.space.CpuShare)
    gpus_per_worker: int
    world: dict[str, Any]
    data_dir: str | None
    model_spec: dict[str, Any]
    # faults.checkpoint_every: steps between mid-stage checkpoints (raysweep.run.resume), 0 for
    # none. How a stage survives a restart, not what it computes: in no stage key.
    checkpoint_every: int

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for the Train workers (typed again by `from_dict`)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__}
        d["stages"] = [s.to_dict() for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialPlan":
        return cls(**{**d, "stages": tuple(StageConfig.from_dict(s) for s in d["stages"])})

    def stage(self, kind: str) -> StageConfig | None:
        return next((s for s in self.stages if s.kind == kind), None)

    @property
    def seed(self) -> int:
        return int(self.params.get("seed", 0))

    def hparam_columns(self) -> dict[str, Any]:
        """The trial's hyperparameters as the results tables type them; a learning rate of a
        stage that does not run is null."""
        p = self.params
        return {
            "lr_pretrain": p.get("lr_pretrain") if self.stage("pretrain") else None,
            "lr_intermediate": p.get("lr_intermediate") if self.stage("intermediate") else None,
            "lr_target": p.get("lr_target"), "mixture": p.get("mixture", NO_MIXTURE),
            "mixture_kind": self.mixture_kind, "seed": self.seed,
        }

    def identity_columns(self, trial_id: str) -> dict[str, Any]:
        """The columns that say whose row it is, in both results tables."""
        return {"sweep": self.sweep, "trial_id": trial_id, "model": self.model,
                "n_params": self.n_params, **self.hparam_columns()}


def world_of(spec: SweepSpec, m: ModelSpec) -> dict[str, Any]:
    """The synthetic world a tiny model lives in ({} for real models)."""
    return normalize_world(spec.world) if m.tiny else {}


def model_identity(m: ModelSpec, world: dict[str, Any]) -> dict[str, Any]:
    """What determines a model's initial weights (part of its first stage's key)."""
    if m.hf is not None:
        return {"hf": m.hf}
    return {"tiny": m.tiny, "shape": dict(TINY_SIZES[m.tiny]), "world": world}


def n_params(spec: SweepSpec, m: ModelSpec) -> int:
    """Backbone + LM head parameters: the space's figure for real models, counted for tiny ones
    (the vocabulary is the synthetic world's)."""
    if m.n_params is not None:
        return m.n_params
    vocab = len(get_world(world_of(spec, m)).vocab)
    return tiny_args(m.tiny, vocab).n_params()


def pretrain_steps(m: ModelSpec) -> int:
    return m.pretrain_steps or TINY_SIZES[m.tiny]["pretrain_steps"]


def build_plan(spec: SweepSpec, m: ModelSpec, params: dict[str, Any]) -> TrialPlan:
    world = world_of(spec, m)
    params = trial_params(spec, params)  # a searched mixture's draws -> its rounded weights
    st = spec.stages
    seed = int(params.get("seed", 0))
    mixture = params.get("mixture", NO_MIXTURE)
    stages: list[StageConfig] = []
    first = {"data_dir": spec.data_dir, "parent": None, "model": model_identity(m, world)}

    def after(stage: StageConfig) -> dict[str, Any]:
        stages.append(stage)
        return {"data_dir": spec.data_dir, "parent": stage.key, "model": None}

    upstream = first
    how = {"precision": spec.precision_of(m), "activation_checkpointing": spec.checkpointing_of(m)}

    def lora(stage_spec) -> dict[str, Any] | None:
        finetune = m.finetune or stage_spec.finetune  # the size's override, else the stage's
        if finetune == "full":
            return None
        cfg = finetune.lora.model_dump(mode="json")
        if "lora_r" in params:
            cfg["r"] = int(params["lora_r"])
        return cfg

    if m.tiny is not None:
        p = st.pretrain
        upstream = after(PretrainConfig(
            **upstream, corpus=p.corpus, lr=params.get("lr_pretrain", p.lr),
            steps=pretrain_steps(m), batch_size=p.batch_size, max_length=p.max_length,
            log_every=p.log_every, seed=p.seed, micro_batch_size=p.micro_batch_size, lora=None,
            **how))
    mix = spec.mixtures[mixture]
    if mix.tasks:
        i = st.intermediate
        upstream = after(IntermediateConfig(
            **upstream, mixture=dict(sorted(params.get(MIXTURE_WEIGHTS, mix.tasks).items())),
            sampler=(mix.sampler or i.sampler).canonical(i.steps),
            lr=params["lr_intermediate"], steps=i.steps, batch_size=i.batch_size,
            max_length=i.max_length, warmup_frac=i.warmup_frac, log_every=i.log_every,
            seed=seed, micro_batch_size=i.micro_batch_size, lora=lora(i), **how))
    t = st.target
    upstream = after(TargetConfig(
        **upstream, tasks=list(t.tasks), lr=params["lr_target"], steps=t.steps,
        batch_size=t.batch_size, max_length=t.max_length, warmup_frac=t.warmup_frac,
        log_every=t.log_every, eval_every=t.eval_every or t.steps, seed=seed,
        micro_batch_size=t.micro_batch_size, lora=lora(t), **how))
    after(EvalConfig(**upstream, languages=eval_languages(spec), batch_size=st.eval.batch_size,
                     max_examples=st.eval.max_examples))
    return TrialPlan(
        sweep=spec.name, model=m.name, n_params=n_params(spec, m),
        params=dict(params), mixture_kind=spec.mixture_kind(mixture), stages=tuple(stages),
        workers=spec.workers(m), cpus_per_worker=spec.cpus_per_worker(m),
        gpus_per_worker=spec.gpus_per_worker(m), world=world, data_dir=spec.data_dir,
        model_spec=m.model_dump(mode="json"), checkpoint_every=spec.faults.checkpoint_every,
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
