"""How an intermediate stage mixes its tasks, as a space writes it: a sampling strategy (a name,
or `{name: {params}}`) and, for a searched mixture, its simplex grid. Pure pydantic; the classes
that draw tasks are `raysweep.train.mixing` (one per strategy, same names).

    sampler: proportional                        # the old string form: a name, default params
    sampler: {temperature: {T: 2, cap: 10000}}   # p_i ∝ w_i · min(n_i, cap)^(1/T)
    sampler: {specified: {weights: {mnli: 3, qqp: 1}}}
    sampler: {linear: {start: {mnli: 1, qqp: 0}, end: {mnli: 0, qqp: 1}}}  # over the stage

Every strategy's probabilities are multiplied by the mixture's own task weights and normalized.
A strategy's canonical form (`canonical`) is the bare name when every parameter is at its
default, so stage keys written with the string form did not move.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

NonNegative = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(_Strict):
    pass


class TemperatureParams(_Strict):
    T: Annotated[float, Field(gt=0)] = 2.0  # 1 = proportional; large T tends to uniform
    cap: Annotated[int, Field(gt=0)] | None = None  # examples counted per task at most (None: all)


class SpecifiedParams(_Strict):
    weights: dict[str, NonNegative]  # task -> probability (normalized); the mixture's tasks


class LinearParams(_Strict):
    """From `start` at the first step to `end` at the last, linearly in between."""

    start: dict[str, NonNegative]
    end: dict[str, NonNegative]
    steps: Annotated[int, Field(gt=0)] | None = None  # default: the stage's steps


STRATEGY_PARAMS: dict[str, type[_Strict]] = {
    "uniform": NoParams, "proportional": NoParams, "temperature": TemperatureParams,
    "specified": SpecifiedParams, "linear": LinearParams,
}


class Strategy(_Strict):
    """One sampling strategy: exactly one field is set. Written as a name (default parameters)
    or a one-key mapping {name: {params}}; pydantic then checks the parameters under their own
    key path (e.g. `sampler.temperature.T`)."""

    uniform: NoParams | None = None
    proportional: NoParams | None = None
    temperature: TemperatureParams | None = None
    specified: SpecifiedParams | None = None
    linear: LinearParams | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, raw: Any) -> Any:
        if isinstance(raw, str):
            raw = {raw: {}}
        if isinstance(raw, dict):  # a dumped Strategy has every name, the unused ones None
            raw = {k: v for k, v in raw.items() if v is not None or len(raw) == 1}
        if not isinstance(raw, dict) or len(raw) != 1:
            raise ValueError(f"give one strategy, as a name or {{name: {{params}}}} (got "
                             f"{raw!r}); allowed: {', '.join(STRATEGY_PARAMS)}")
        (name, params), = raw.items()
        if name not in STRATEGY_PARAMS:
            raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGY_PARAMS)}")
        return {name: params if params is not None else {}}

    @property
    def name(self) -> str:
        return next(n for n in STRATEGY_PARAMS if getattr(self, n) is not None)

    @property
    def params(self) -> _Strict:
        return getattr(self, self.name)

    def canonical(self, steps: int | None = None) -> str | dict[str, Any]:
        """What a stage config holds (and its key hashes): the bare name at default parameters,
        else {name: params without defaults}; a linear schedule gets the stage's `steps`."""
        params = self.params.model_dump(mode="json", exclude_defaults=True)
        if self.name == "linear" and params.get("steps") is None and steps is not None:
            params["steps"] = steps
        return {self.name: dict(sorted(params.items()))} if params else self.name

    def tasks(self) -> list[tuple[str, dict[str, float]]]:
        """The task weights the strategy names, with their key (checked against mixtures)."""
        p = self.params
        if isinstance(p, SpecifiedParams):
            return [("weights", p.weights)]
        if isinstance(p, LinearParams):
            return [("start", p.start), ("end", p.end)]
        return []


class SimplexSpec(_Strict):
    """A mixture whose task weights are searched: drawn on the simplex, rounded to `grid`."""

    grid: Annotated[float, Field(gt=0, le=0.5)] = 0.05  # 1/grid must be a whole number

    @model_validator(mode="after")
    def _whole(self) -> "SimplexSpec":
        units = round(1 / self.grid)
        if abs(units * self.grid - 1) > 1e-9:
            raise ValueError(f"1/grid must be a whole number (got grid {self.grid}); e.g. 0.05, "
                             "0.1, 0.25")
        return self

    @property
    def units(self) -> int:
        return round(1 / self.grid)
