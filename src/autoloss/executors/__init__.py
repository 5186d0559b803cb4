"""Where work runs: serial, a local process pool, or a Ray cluster — one small protocol.

An executor has `submit(fn, *args) -> Future` (a `concurrent.futures.Future`: `done()`, `result()`),
`slots` (how many tasks it runs at once) and `shutdown()`. Functions and arguments must be picklable
module-level functions and plain data; results come back as plain data.
"""

from autoloss.executors.base import Executor, WorkerLost, make_executor

__all__ = ["Executor", "WorkerLost", "make_executor"]
