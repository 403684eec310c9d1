"""The task registry: tasks register themselves by name; spaces refer to them by name."""

from __future__ import annotations

import importlib

from raysweep.tasks.base import Task

_TASKS: dict[str, Task] = {}

# Modules whose import registers tasks. Add a task family here and nowhere else.
TASK_MODULES: tuple[str, ...] = (
    "raysweep.tasks.synthetic",
    "raysweep.tasks.classification",
    "raysweep.tasks.multiple_choice",
    "raysweep.tasks.tagging",
    "raysweep.tasks.qa",
    "raysweep.tasks.retrieval",
    "raysweep.tasks.lm",
)
_loaded = False


def register(task: Task) -> Task:
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"task {task.name!r} is registered twice")
    _TASKS[task.name] = task
    return task


def _load_builtin() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in TASK_MODULES:
            try:
                importlib.import_module(module)
            except ModuleNotFoundError as err:
                # Tolerate a task family that is not written yet (the module itself missing),
                # never a missing dependency inside a module that exists.
                if err.name != module:
                    raise


def get_task(name: str) -> Task:
    _load_builtin()
    try:
        return _TASKS[name]
    except KeyError:
        raise KeyError(
            f"unknown task {name!r}; known tasks: {', '.join(sorted(_TASKS))}"
        ) from None


def all_tasks() -> dict[str, Task]:
    _load_builtin()
    return dict(sorted(_TASKS.items()))
