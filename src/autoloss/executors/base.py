"""The executor protocol, the failures every backend reports the same way, and the serial backend."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from autoloss.errors import AutolossError


class WorkerLost(RuntimeError):
    """The process running a task died (killed, out of memory); the task may be retried elsewhere."""


class OutOfMemory(WorkerLost):
    """A task ran out of accelerator memory. Like a lost worker: the memory may be free on another worker
    (or on this one once its cache is released), so the task is worth one retry."""


class TrialTimeout(RuntimeError):
    """A task ran past its time limit and was stopped; its worker was killed so it frees its core or GPU."""


class BackendUnavailable(AutolossError):
    """The chosen backend cannot run here (a missing optional package, no cluster at the address)."""


class TaskFuture(Future):
    """A `Future` whose running task can be stopped: the backend kills what runs it and the future fails
    with the reason given. Stopping a finished task does nothing."""

    def __init__(self, stopper: Callable[[BaseException], None] | None = None):
        super().__init__()
        self._stopper = stopper

    def stop(self, reason: BaseException) -> None:
        if not self.done() and self._stopper is not None:
            self._stopper(reason)


def stop_task(future: Future, reason: BaseException) -> bool:
    """Stop the task behind `future` if its backend can (False where it cannot, e.g. a plain Future)."""
    if isinstance(future, TaskFuture):
        future.stop(reason)
        return True
    return False


def trial(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a task function as a trial: backends give it the per-trial resources (a GPU, several CPUs)
    instead of the one CPU that a screening chunk gets."""
    fn.autoloss_trial = True  # type: ignore[attr-defined]
    return fn


def is_trial(fn: Callable[..., Any]) -> bool:
    return bool(getattr(fn, "autoloss_trial", False))


class Executor(Protocol):
    slots: int

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future: ...

    def shutdown(self) -> None: ...


class SerialExecutor:
    """Runs each task at submit time in this process: the reference for determinism tests and debugging.

    Its tasks have finished before anyone could stop them, so per-trial timeouts do not apply here."""

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
