"""Loading a space: YAML file -> `SweepSpec`, every pydantic error turned into one `SpaceError`
naming the file, the key path and what is allowed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from raysweep.spec.check import check
from raysweep.spec.space import SpaceError, SweepSpec

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"

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
