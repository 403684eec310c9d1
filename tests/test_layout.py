"""The house holds: imports between rooms follow the one-way flow, no module imports itself
back through a cycle, the config layer imports neither torch nor ray, and no module grows past
what a newcomer reads at once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "raysweep"

# Which rooms each room may import (function-level imports count: they run too). Data flows
# spec -> plan -> run -> results -> analysis; cli sits on top. A new room, or a new edge, is a
# decision: make it here.
ALLOWED = {
    "console": set(),
    "data": set(),
    "tasks": {"data"},
    "model": {"tasks"},
    "spec": {"data", "tasks", "model"},
    "plan": {"spec", "data", "tasks", "model"},
    "train": {"tasks", "model"},
    "results": {"plan", "spec", "console"},
    "run": {"console", "spec", "plan", "data", "tasks", "model", "train", "results"},
    "analysis": {"results", "spec", "tasks", "console"},
    "cli": {"console", "spec", "plan", "data", "tasks", "model", "train", "results", "run",
            "analysis"},
}
# The config layer reaches model/ only for the torch-free size arithmetic.
ONLY = {("spec", "model"): {"raysweep.model.args"}, ("plan", "model"): {"raysweep.model.args"}}
# Pure numerics may be long; everything else is read at one sitting.
MAX_LINES, LONG_OK = 400, {"raysweep.analysis.scaling"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The raysweep modules `name` imports, anywhere in its body (a package import counts as
    its __init__; `from pkg import mod` as the module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.startswith("raysweep")}
    return {t for t in out if t in MODULES and t != name}


def _runtime_nodes(tree: ast.AST):
    """Every node that can run: `if TYPE_CHECKING:` blocks are for type checkers only."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and getattr(child.test, "id", None) == "TYPE_CHECKING":
            for c in child.orelse:
                yield c
                yield from _runtime_nodes(c)
            continue
        yield child
        yield from _runtime_nodes(child)


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_room_is_declared():
    rooms = {room(m) for m in MODULES} - {None}
    assert rooms == set(ALLOWED), f"undeclared rooms: {rooms - set(ALLOWED)}; " \
        f"declared but absent: {set(ALLOWED) - rooms}"


def test_imports_between_rooms_follow_the_flow():
    bad = []
    for name in MODULES:
        src = room(name)
        for target in imports_of(name):
            dst = room(target)
            if src is None or dst is None or dst == src:
                continue
            only = ONLY.get((src, dst))
            if dst not in ALLOWED[src] or (only is not None and target not in only):
                bad.append(f"{name} -> {target}")
    assert not bad, "imports against the flow:\n" + "\n".join(sorted(bad))


def test_no_import_cycles():
    graph = {m: imports_of(m) for m in MODULES}
    # Importing `a.b.c` runs the package `a.b`'s __init__ first: that edge counts too, except
    # for the importer's own package, whose __init__ is already running (re-exports are fine).
    for m in MODULES:
        own = m if MODULES[m].name == "__init__.py" else m.rpartition(".")[0]
        for target in list(graph[m]):
            parts = target.split(".")
            parents = {".".join(parts[:i]) for i in range(2, len(parts))} & set(MODULES)
            graph[m] |= {p for p in parents if not own.startswith(p)}
        graph[m].discard(m)
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.add(w)
                if w == v:
                    break
            if len(scc) > 1:
                cycles.append(sorted(scc))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("module", ["raysweep.spec", "raysweep.plan.build",
                                    "raysweep.plan.describe", "raysweep.model.args"])
def test_config_layer_imports_neither_torch_nor_ray(module):
    code = (f"import sys; import {module}; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"


def test_loading_and_planning_a_space_needs_no_torch():
    code = ("import sys; from raysweep.spec import load_space; "
            "from raysweep.plan.build import build_plan; "
            "spec, _ = load_space('tiny_scaling'); "
            "[build_plan(spec, m, {'lr_target': 1e-3, 'lr_intermediate': 2e-3, "
            "'mixture': 'english'}) for m in spec.models]; "
            "print('torch' in sys.modules, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False False"


def test_no_module_is_too_long():
    long = {m: n for m, p in MODULES.items()
            if (n := len(p.read_text().splitlines())) > MAX_LINES and m not in LONG_OK}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
