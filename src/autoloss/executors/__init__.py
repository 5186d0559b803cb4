"""Where work runs: serial, a local process pool, or a Ray cluster — one small protocol.

An executor has `submit(fn, *args) -> Future` (a `concurrent.futures.Future`: `done()`, `result()`),
`slots` (how many tasks it runs at once) and `shutdown()`. Functions and arguments must be picklable
module-level functions and plain data; results come back as plain data. A failure of the machinery
(not of the task) arrives as `WorkerLost`, `OutOfMemory` or `TrialTimeout` through the future; backends
that can stop a running task return a `TaskFuture` (see `stop_task`).
"""

from autoloss.executors.base import (
    BackendUnavailable,
    Executor,
    OutOfMemory,
    TaskFuture,
    TrialTimeout,
    WorkerLost,
    is_trial,
    make_executor,
    stop_task,
    trial,
)

__all__ = [
    "BackendUnavailable",
    "Executor",
    "OutOfMemory",
    "TaskFuture",
    "TrialTimeout",
    "WorkerLost",
    "is_trial",
    "make_executor",
    "stop_task",
    "trial",
]
