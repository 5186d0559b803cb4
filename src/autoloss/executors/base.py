"""The executor protocol and the serial backend."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol


class WorkerLost(RuntimeError):
    """The process running a task died (killed, out of memory); the task may be retried elsewhere."""


class Executor(Protocol):
    slots: int

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future: ...

    def shutdown(self) -> None: ...


class SerialExecutor:
    """Runs each task at submit time in this process: the reference for determinism tests and debugging."""

    slots = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # the caller decides; a serial task must not end the search
            future.set_exception(exc)
        return future

    def shutdown(self) -> None:
        pass


def make_executor(
    backend: str,
    workers: int = 2,
    *,
    ray_address: str | None = None,
    gpus_per_trial: float = 0.0,
    cpus_per_trial: float = 1.0,
) -> Executor:
    """The executor for `backend` ("serial", "process" or "ray")."""
    if backend == "serial":
        return SerialExecutor()
    if backend == "process":
        from autoloss.executors.process import ProcessExecutor

        return ProcessExecutor(workers)
    if backend == "ray":
        from autoloss.executors.ray_backend import RayExecutor

        return RayExecutor(
            workers, address=ray_address, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial
        )
    raise ValueError(f"unknown backend {backend!r}; expected serial, process or ray")
