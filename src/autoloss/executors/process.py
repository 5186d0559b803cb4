"""A local process pool: one single-threaded worker per core.

Two single-threaded proxy trainings side by side give 1.25-1.55x the throughput of one two-threaded
training on 2 cores (DESIGN.md), so workers pin torch to one thread. Workers are spawned, not forked:
forking a process that has already started torch's thread pools can deadlock.

A worker that dies (killed, out of memory) breaks a `ProcessPoolExecutor` for every task in it; this
wrapper turns that into `WorkerLost` on the affected futures and starts a fresh pool for what comes next,
so the caller can retry the lost tasks.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from autoloss.executors.base import WorkerLost


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # screening-only workers may run without torch loaded yet
        pass


class ProcessExecutor:
    def __init__(self, workers: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be positive, got {workers}")
        self.slots = workers
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.slots, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        outer: Future = Future()
        with self._lock:
            try:
                inner = self._pool.submit(fn, *args)
            except BrokenProcessPool:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
                inner = self._pool.submit(fn, *args)
        pool = self._pool

        def relay(done: Future) -> None:
            exc = done.exception()
            if isinstance(exc, BrokenProcessPool):
                self._replace(pool)
                outer.set_exception(WorkerLost(f"a worker process died while running this task ({exc})"))
            elif exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(done.result())

        inner.add_done_callback(relay)
        return outer

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (for tests that kill one)."""
        return [p.pid for p in getattr(self._pool, "_processes", {}).values() if p.is_alive()]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
