"""The proxy-task protocol (`ProxyTask`, `Schedule`) and how tasks are found by name."""

from autoloss.tasks.protocol import ProgressFn, ProxyTask, RunResult, Schedule, TaskError, TrainReport
from autoloss.tasks.registry import (
    BUILTIN,
    DEFAULT_TASK,
    canonical_name,
    load_task,
    name_of,
    task_factory,
    task_key,
)

__all__ = [
    "BUILTIN",
    "DEFAULT_TASK",
    "ProgressFn",
    "ProxyTask",
    "RunResult",
    "Schedule",
    "TaskError",
    "TrainReport",
    "canonical_name",
    "load_task",
    "name_of",
    "task_factory",
    "task_key",
]
