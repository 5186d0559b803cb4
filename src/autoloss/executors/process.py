"""A local process pool: one single-threaded worker process per slot, each fed by its own thread.

Two single-threaded proxy trainings side by side give 1.25-1.55x the throughput of one two-threaded
training on 2 cores (BENCHMARKS.md, "Scaling"), so workers pin torch to one thread by default. Workers are
spawned, not forked: forking a process that has already started torch's thread pools can deadlock.

Why not `concurrent.futures.ProcessPoolExecutor`: it cannot say which process runs which task, and one
dead worker breaks the pool for every task in flight. Here each slot owns its worker, so stopping a task
(a per-trial timeout) kills exactly the process running it, a dead worker costs only its own task
(`WorkerLost`), and the slot starts a fresh process for the next one.

GPUs: given one GPU id per slot, each worker runs with CUDA_VISIBLE_DEVICES set to its slot's id, so it
sees that one GPU and a task's device "cuda" (cuda:0) is it; a restarted worker keeps its slot's GPU.
The variable is set first thing in the fresh (spawned) child, before anything there initialises CUDA,
which reads it once; importing torch does not initialise CUDA, so a module that imports torch before
this runs is fine. Setting it in the parent around `start()` instead would race with other threads.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_ready
from typing import Any

from autoloss.executors.base import TaskFuture, WorkerLost

_PIPE_ERRORS = (EOFError, OSError)  # the other end is gone: BrokenPipe, ConnectionReset, closed handle


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # screening-only workers may run without torch
        pass


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    """In a worker: end this process once its parent is gone (killed with SIGKILL, say, so it never
    shut its workers down). The pipe shows that only between tasks; this shows it during a training."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)  # nobody wants the result; exit without cleanup that could block on the dead parent

    threading.Thread(target=watch, name="autoloss-parent-watch", daemon=True).start()


def _serve_tasks(conn: Any, env: dict[str, str] | None = None, parent: int | None = None) -> None:
    """A worker process: run (fn, args) messages until told to stop or the parent goes away."""
    os.environ.update(env or {})  # before torch is set up: CUDA reads CUDA_VISIBLE_DEVICES only once
    if parent is not None:
        _exit_with_parent(parent)
    _init_worker()
    while True:
        try:
            message = conn.recv()
        except _PIPE_ERRORS:  # the parent died: nobody wants the results any more
            return
        if message is None:
            return
        fn, args = message
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # the parent decides what a failure means; this process serves on
            reply = (False, exc)
        try:
            conn.send(reply)
        except _PIPE_ERRORS:
            return
        except Exception as exc:  # the result or exception does not pickle: say so instead of hanging
            what = "result" if reply[0] else f"exception ({reply[1]!r})"
            conn.send((False, RuntimeError(f"the task's {what} cannot be sent back: {exc}")))


class _Worker:
    def __init__(self, ctx: Any, env: dict[str, str] | None = None):
        self.conn, child = ctx.Pipe()
        # Not daemonic: a daemonic process may not start children, and a training with loader workers
        # (a DataLoader with num_workers > 0, as the COCO presets use) starts them. The pool is reaped
        # instead: shutdown(), at interpreter exit (`_shutdown_at_exit`), and by each worker's own watch
        # on its parent, which ends it if the parent dies without either.
        self.process = ctx.Process(
            target=_serve_tasks, args=(child, env, os.getpid()), name="autoloss-worker", daemon=False
        )
        self.process.start()
        child.close()  # only the worker holds its end, so its death shows up here as EOF

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()

    def close(self, grace: float = 2.0) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(None)
            except _PIPE_ERRORS:
                pass
            self.process.join(grace)
        self.kill()
        self.process.join()
        self.conn.close()


@dataclass
class _Task:
    fn: Callable[..., Any]
    args: tuple
    future: TaskFuture = field(default_factory=TaskFuture)
    worker: _Worker | None = None
    stop_reason: BaseException | None = None


class ProcessExecutor:
    """`workers` worker processes; with `gpus` (one GPU id per slot, see `gpu_slots`), slot k's worker
    sees only GPU gpus[k], and the pool has one slot per entry."""

    def __init__(self, workers: int | None = None, *, gpus: list[str] | None = None):
        if gpus is not None:
            if not gpus:
                raise ValueError("gpus must name at least one GPU (or be None for CPU workers)")
            if workers is not None and workers != len(gpus):
                raise ValueError(f"{workers} workers but {len(gpus)} GPU slots; give one GPU id per worker")
            workers = len(gpus)
        elif workers is None:
            workers = 2
        if workers < 1:
            raise ValueError(f"workers must be positive, got {workers}")
        self.slots = workers
        self.gpus = list(gpus) if gpus is not None else None
        # Per slot, not per worker: the restarted worker of a slot gets the same GPU
        self._envs: list[dict[str, str] | None] = (
            [{"CUDA_VISIBLE_DEVICES": g} for g in gpus] if gpus is not None else [None] * workers
        )
        self._ctx = multiprocessing.get_context("spawn")
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker | None] = [None] * workers
        self._closed = False
        self._threads = [
            threading.Thread(target=self._serve, args=(slot,), name=f"autoloss-slot-{slot}", daemon=True)
            for slot in range(workers)
        ]
        for thread in self._threads:
            thread.start()
        self._at_exit = _shutdown_at_exit(self)

    def submit(self, fn: Callable[..., Any], *args: Any) -> TaskFuture:
        if self._closed:
            raise RuntimeError("this executor has been shut down")
        task = _Task(fn, args)
        task.future = TaskFuture(lambda reason: self._stop(task, reason))
        self._queue.put(task)
        return task.future

    def _stop(self, task: _Task, reason: BaseException) -> None:
        with self._lock:
            task.stop_reason = reason
            worker = task.worker
        if worker is not None:
            worker.kill()  # the slot's thread sees the death and fails the future with `reason`

    def _serve(self, slot: int) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            with self._lock:
                if task.stop_reason is not None:  # stopped while it waited in the queue
                    task.future.set_exception(task.stop_reason)
                    continue
                if not task.future.set_running_or_notify_cancel():
                    continue
                worker = self._workers[slot]
                if worker is None or not worker.alive():
                    if worker is not None:
                        worker.close()
                    try:
                        worker = self._workers[slot] = _Worker(self._ctx, self._envs[slot])
                    except Exception as exc:  # cannot start a process: fail this task, keep the slot
                        self._workers[slot] = None
                        task.future.set_exception(WorkerLost(f"could not start a worker process: {exc}"))
                        continue
                task.worker = worker
            self._run(slot, worker, task)

    def _run(self, slot: int, worker: _Worker, task: _Task) -> None:
        future = task.future
        try:
            worker.conn.send((task.fn, task.args))
        except _PIPE_ERRORS:
            return self._lost(slot, worker, task)
        except Exception as exc:  # the task does not pickle: it never started and the worker is fine
            future.set_exception(exc)
            return None
        ready = wait_ready([worker.conn, worker.process.sentinel])
        if worker.conn in ready:  # a reply can be waiting even if the worker died just after sending it
            try:
                ok, value = worker.conn.recv()
            except _PIPE_ERRORS:
                return self._lost(slot, worker, task)
            except Exception as exc:  # the reply does not unpickle here
                future.set_exception(exc)
                return None
            if ok:
                future.set_result(value)
            else:
                if isinstance(value, WorkerLost):
                    # e.g. CUDA out of memory: a fresh process releases what this one holds, so the retry
                    # gets a clean start
                    self._retire(slot, worker)
                future.set_exception(value)
            return None
        return self._lost(slot, worker, task)

    def _lost(self, slot: int, worker: _Worker, task: _Task) -> None:
        worker.process.join(1.0)
        code = worker.process.exitcode
        self._retire(slot, worker)
        if task.stop_reason is not None:
            task.future.set_exception(task.stop_reason)
        else:
            pid = worker.process.pid
            lost = WorkerLost(f"worker process {pid} died while running this task (exit code {code})")
            task.future.set_exception(lost)

    def _retire(self, slot: int, worker: _Worker) -> None:
        with self._lock:
            if self._workers[slot] is worker:
                self._workers[slot] = None
        worker.kill()
        worker.close()

    def worker_pids(self) -> list[int]:
        """PIDs of the live workers (for tests that kill one)."""
        with self._lock:
            return [w.process.pid for w in self._workers if w is not None and w.alive()]

    def shutdown(self) -> None:
        """Stop the workers. Queued tasks are cancelled; a task still running is killed (`WorkerLost`)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        while True:
            try:
                task = self._queue.get_nowait()
            except queue.Empty:
                break
            if task is not None:
                task.future.cancel()
        for _ in self._threads:
            self._queue.put(None)
        with self._lock:
            workers = [w for w in self._workers if w is not None]
        for worker in workers:
            worker.kill()  # idle workers hold nothing worth a goodbye; a busy one is not waited for
        for thread in self._threads:
            thread.join()
        for worker in {*workers, *(w for w in self._workers if w is not None)}:
            worker.close()


def _shutdown_at_exit(executor: ProcessExecutor) -> Callable[[], None]:
    """Shut `executor` down when the interpreter exits, if nobody did before. This runs before
    multiprocessing's own exit handler (atexit is last-in, first-out), which would otherwise wait forever
    for the non-daemonic workers blocked on their pipes. A weak reference: the pool may be collected."""
    ref = weakref.ref(executor)

    def stop() -> None:
        pool = ref()
        if pool is not None:
            pool.shutdown()

    atexit.register(stop)
    return stop
