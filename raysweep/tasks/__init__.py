"""Tasks: the interface (`base`), the registry, loaders, heads and metrics."""

from raysweep.tasks.base import DataContext, Split, Task, TaskDataError
from raysweep.tasks.registry import all_tasks, get_task, register

__all__ = ["DataContext", "Split", "Task", "TaskDataError", "all_tasks", "get_task", "register"]
