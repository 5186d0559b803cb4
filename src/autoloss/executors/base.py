"""The executor protocol, the failures every backend reports the same way, the serial backend, and the
choice of backend (with the GPU each local worker gets)."""

from __future__ import annotations

import os
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


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as CUDA names them: CUDA_VISIBLE_DEVICES where it is set (""
    hides every GPU), else one index per device torch sees. [] on a machine without CUDA.

    The ids go into each worker's CUDA_VISIBLE_DEVICES unchanged, so they stay strings: they may be
    UUIDs ("GPU-5ad1...") or MIG names as well as indices."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        gpus = []
        for name in (part.strip() for part in env.split(",")):
            # CUDA stops at the first entry it cannot use; "-1" is the usual way to hide the rest
            if not name or name.startswith("-"):
                break
            gpus.append(name)
        return gpus
    try:
        import torch
    except ImportError:
        return []
    # device_count() asks the driver (or NVML) without creating a CUDA context here; 0 without CUDA
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_slots(
    visible: list[str], workers_per_gpu: int | None = None, workers: int | None = None
) -> list[str]:
    """The GPU id of each worker slot, dealt round-robin so the first tasks land on different GPUs.

    One worker per GPU by default (a proxy training keeps a GPU busy); `workers_per_gpu` puts that many
    on each (small proxies that leave a GPU half idle); `workers` alone deals that many slots over the
    GPUs (3 on 2 GPUs: 0, 1, 0)."""
    if not visible:
        raise ValueError("no GPU is visible (CUDA_VISIBLE_DEVICES is empty or no CUDA device found)")
    if workers_per_gpu is not None and workers_per_gpu < 1:
        raise ValueError(f"workers_per_gpu must be at least 1, got {workers_per_gpu}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    if workers_per_gpu is not None:
        count = len(visible) * workers_per_gpu
        if workers is not None and workers != count:
            raise ValueError(
                f"{workers} workers do not fit {workers_per_gpu} per GPU on {len(visible)} GPU(s) "
                f"({count}); give one of the two"
            )
    else:
        count = workers if workers is not None else len(visible)
    return [visible[k % len(visible)] for k in range(count)]


def make_executor(
    backend: str,
    workers: int = 2,
    *,
    device: str = "cpu",
    workers_per_gpu: int | None = None,
    ray_address: str | None = None,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float = 1.0,
) -> Executor:
    """The executor for `backend` ("serial", "process" or "ray") and the device the trials train on.

    Process backend on cuda: the GPUs decide the pool, and `workers` is ignored: one worker per visible
    GPU, or `workers_per_gpu` on each. Each worker sees only its GPU (CUDA_VISIBLE_DEVICES), so a task's
    "cuda" is that GPU. Ray: `gpus_per_trial` None is 1 on cuda and 0 on cpu (see RayExecutor)."""
    if backend == "serial":
        return SerialExecutor()
    if backend == "process":
        from autoloss.executors.process import ProcessExecutor

        if not device.startswith("cuda"):
            return ProcessExecutor(workers)
        if device not in ("cuda", "cuda:0"):
            # every worker sees exactly one GPU, as cuda:0: a fixed other index exists in none of them
            raise BackendUnavailable(
                f"the process backend gives each worker one GPU, seen as cuda; use --device cuda "
                f"(not {device!r}) and choose the GPUs with CUDA_VISIBLE_DEVICES"
            )
        visible = visible_gpus()
        if not visible:
            raise BackendUnavailable(
                "--device cuda but no GPU is visible (CUDA_VISIBLE_DEVICES is empty or CUDA finds no "
                "device); use --device cpu or make a GPU visible"
            )
        return ProcessExecutor(gpus=gpu_slots(visible, workers_per_gpu))
    if backend == "ray":
        from autoloss.executors.ray_backend import RayExecutor

        return RayExecutor(
            workers,
            address=ray_address,
            device=device,
            gpus_per_trial=gpus_per_trial,
            cpus_per_trial=cpus_per_trial,
        )
    raise ValueError(f"unknown backend {backend!r}; expected serial, process or ray")
