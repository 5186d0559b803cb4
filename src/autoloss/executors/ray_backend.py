"""The Ray backend: proxy trainings as Ray tasks on one machine or across a cluster of GPU nodes.

Ray is an optional extra and is imported only here. Without an address this starts a private cluster on
loopback only (the machines this runs on may have no network): no dashboard, no usage
statistics. With an address ("auto" or HOST:PORT) it joins a running cluster and leaves it running.

Trials (functions marked with `autoloss.executors.trial`) ask Ray for `gpus_per_trial` GPUs and
`cpus_per_trial` CPUs; everything else (screening chunks) for one CPU. Ray's own retries are off: the
search retries a lost trial once itself and records it, which Ray's silent retries would hide.

GPUs: Ray sets each task's CUDA_VISIBLE_DEVICES to the GPUs it was given, so a trial's device "cuda" is
its own GPU, and a trial given none sees no GPU at all. Hence on cuda a trial asks for one GPU unless
told otherwise, and zero is refused; a fraction (0.5) lets trials share a GPU. A GPU trial runs in a
worker process of its own (`max_calls=1`): a Ray worker that initialised CUDA keeps that context when it
is later handed another GPU id, which would put two trials on one GPU and leave idle GPUs holding
contexts. `max_calls` can only be declared with the remote function, not set through `.options()`, so GPU
trials have their own remote function with their resources.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from autoloss.executors.base import BackendUnavailable, TaskFuture, WorkerLost, is_trial

INSTALL_HINT = "the ray backend needs Ray: pip install 'autoloss[ray]' (or: pip install 'ray>=2.9')"


def _import_ray(local: bool) -> Any:
    # Both read when Ray is imported. Usage statistics would be sent over the network: off. Without
    # "cluster mode", Ray >= 2.50 keeps a private cluster on 127.0.0.1 (with it, `_node_ip_address=
    # "127.0.0.1"` is replaced by the machine's network address and every server listens on all
    # interfaces); the flag's name says Windows/OSX, but it is the one switch that does this on Linux.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if local:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailable(INSTALL_HINT) from exc
    return ray


def trial_gpus(device: str, gpus_per_trial: float | None) -> float:
    """The GPUs each trial asks Ray for: 1 on cuda and 0 on cpu unless given; never 0 on cuda."""
    cuda = device.startswith("cuda")
    if gpus_per_trial is None:
        return 1.0 if cuda else 0.0
    if gpus_per_trial < 0:
        raise ValueError(f"gpus_per_trial must be >= 0, got {gpus_per_trial:g}")
    if cuda and gpus_per_trial == 0:
        raise BackendUnavailable(
            "--device cuda with 0 GPUs per trial: Ray sets CUDA_VISIBLE_DEVICES to a trial's GPUs, so a "
            "zero-GPU trial would see none; pass --gpus-per-trial > 0 (a fraction such as 0.5 shares a GPU)"
        )
    return float(gpus_per_trial)


def _call(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """Runs in a Ray worker: pin torch's threads to the CPUs the task was given, then run the task."""
    # Ray reuses a worker for tasks of different sizes, so this is set per task; it reaches what starts
    # its OpenMP pool after this (a first import, a subprocess), and torch is pinned directly below.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    return fn(*args)


class RayExecutor:
    def __init__(
        self,
        workers: int = 2,
        *,
        address: str | None = None,
        device: str = "cpu",
        gpus_per_trial: float | None = None,
        cpus_per_trial: float = 1.0,
    ):
        if workers < 1:
            raise ValueError(f"workers must be positive, got {workers}")
        if cpus_per_trial <= 0:
            raise ValueError(f"cpus_per_trial must be > 0, got {cpus_per_trial:g}")
        # Before Ray starts: a refused setting costs nothing and leaves no cluster behind
        gpus_per_trial = trial_gpus(device, gpus_per_trial)
        ray = self._ray = _import_ray(local=address is None)
        self.slots = workers
        self.gpus_per_trial = gpus_per_trial
        self.cpus_per_trial = cpus_per_trial
        self._lock = threading.Lock()
        self._running: dict[Any, TaskFuture] = {}
        # Whether shutdown() calls ray.shutdown(): it stops a cluster this executor started and only
        # disconnects from one it joined; a caller that initialised Ray itself keeps its session.
        self._initialised = False
        if not ray.is_initialized():
            self._init(address, workers, cpus_per_trial)
            self._initialised = True
        self._remote = ray.remote(_call)
        self._gpu_remote = (
            ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial, max_calls=1)(_call)
            if gpus_per_trial > 0
            else None
        )
        self._check_resources()

    def _init(self, address: str | None, workers: int, cpus_per_trial: float) -> None:
        ray = self._ray
        quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
        if address is None:
            cpus = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_trial))
            ray.init(_node_ip_address="127.0.0.1", num_cpus=cpus, **quiet)
            return
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackendUnavailable(
                f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head` "
                "(and `ray start --address=HEAD:6379` on the other nodes), or leave out --ray-address "
                "for a local one"
            ) from exc

    def _check_resources(self) -> None:
        # A task asking for more than any node has waits forever in Ray; say so now instead.
        have = self._ray.cluster_resources()
        for name, need in (("GPU", self.gpus_per_trial), ("CPU", self.cpus_per_trial)):
            if need > 0 and have.get(name, 0.0) < need:
                self.shutdown()
                got = have.get(name, 0.0)
                raise BackendUnavailable(
                    f"each trial asks for {need:g} {name}(s) but the Ray cluster has {got:g}; "
                    f"lower --{name.lower()}s-per-trial or add nodes"
                )

    def submit(self, fn: Callable[..., Any], *args: Any) -> TaskFuture:
        remote, options, threads = self._remote, {"num_cpus": 1, "num_gpus": 0}, 1
        if is_trial(fn):
            threads = max(1, int(self.cpus_per_trial))
            if self._gpu_remote is not None:  # its resources and max_calls are declared with it
                remote, options = self._gpu_remote, {}
            else:
                options = {"num_cpus": self.cpus_per_trial, "num_gpus": 0}
        ref = remote.options(max_retries=0, **options).remote(threads, fn, *args)
        stopped: list[BaseException] = []

        def stop(reason: BaseException) -> None:
            stopped.append(reason)
            self._ray.cancel(ref, force=True)  # force: kill the worker, so a hung trial frees its GPU

        outer = TaskFuture(stop)
        with self._lock:
            self._running[ref] = outer

        def relay(inner: Future) -> None:
            with self._lock:
                self._running.pop(ref, None)
            exc = inner.exception()
            if exc is None:
                outer.set_result(inner.result())
            elif stopped:
                outer.set_exception(stopped[0])
            else:
                outer.set_exception(self._translate(exc))

        ref.future().add_done_callback(relay)
        return outer

    def _translate(self, exc: BaseException) -> BaseException:
        """Ray's errors as the protocol's: the task's own exception, or `WorkerLost` for the machinery."""
        errors = self._ray.exceptions
        if isinstance(exc, errors.RayTaskError):
            cause = getattr(exc, "cause", None)
            return cause if isinstance(cause, BaseException) else exc
        lost = tuple(
            getattr(errors, name)
            for name in (
                "WorkerCrashedError",
                "NodeDiedError",
                "LocalRayletDiedError",
                "OutOfMemoryError",  # Ray's memory monitor killed the worker (host RAM, not the GPU)
                "TaskUnschedulableError",
                "ObjectLostError",
            )
            if hasattr(errors, name)
        )
        if isinstance(exc, lost):
            return WorkerLost(f"the Ray worker running this task was lost: {type(exc).__name__}: {exc}")
        return exc

    def shutdown(self) -> None:
        """Cancel what is still running here; stop the cluster only if this executor started it."""
        ray = self._ray
        with self._lock:
            running = list(self._running)
        for ref in running:
            ray.cancel(ref, force=True)
        if self._initialised and ray.is_initialized():
            ray.shutdown()
        self._initialised = False
