"""Proxy trainings for the search: the schedule, the result cache, retries and the budget.

Every finished training is appended to `evaluations.jsonl` the moment it completes, keyed by
(cls loss, reg loss, seed). A resumed search replays its deterministic decisions and takes finished
trainings from this cache, so only the trainings that were in flight when it was killed run again.

Faults are contained here, the same way on every backend: a training whose worker died, that raised,
that ran out of GPU memory or that passed `trial_timeout_s` (its worker is killed) is retried once, then
recorded as failed with the reason — worst fitness, and the search goes on.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from typing import Any

from autoloss.errors import AutolossError
from autoloss.evolution.config import SearchConfig, proxy_task_settings
from autoloss.evolution.engine import DEFAULT
from autoloss.evolution.fitness import ap_of, combine
from autoloss.evolution.work import proxy_task, trial_spec
from autoloss.executors.base import TrialTimeout, stop_task
from autoloss.runs.failpoints import failpoint
from autoloss.runs.rundir import RunDir
from autoloss.tasks import Schedule

EVALUATIONS = "evaluations.jsonl"


class ProxyBroken(AutolossError):
    """The proxy task, not a loss, is at fault: every baseline training failed, or the circuit breaker saw
    the same failure too many times in a row. The search stops (exit code 1) with the reason."""


# What to do about a broken proxy: resume keeps the run's settings, so only a cause outside them can be fixed
# in place.
FIX_HINT = (
    "fix the cause (files, device, workers), then `autoloss resume` the run directory; a different "
    "setting (e.g. --backbone-weights) needs a new run"
)


def first_line(reason: object) -> str:
    """The first line of a recorded failure reason (tracebacks and long errors follow it)."""
    text = str(reason or "").strip()
    return text.splitlines()[0] if text else "no reason recorded"


def failure_kind(reason: str) -> str:
    """A failure's reason without its numbers (pids, iterations, sizes), so that one cause repeated across
    trainings compares equal."""
    return re.sub(r"\d+(\.\d+)?", "#", first_line(reason))


def base_schedule(cfg: SearchConfig, seed: int = 0) -> Schedule:
    """Rung 0's schedule: the config's length (or the task's own), device, and each training's torch
    threads (the CPUs it was given)."""
    t = cfg.task
    iterations, epochs = t.iterations, t.epochs
    if iterations is None and epochs is None:
        iterations, epochs = cfg.load_task().default_length()
    threads = max(1, int(cfg.backend.cpus_per_trial))
    return Schedule(iterations=iterations, epochs=epochs, seed=seed, device=t.device, threads=threads)


def eval_id(
    cls_loss: str, reg_loss: str, seed: int, multiplier: int = 1, device: str = "cpu", split: str = "val"
) -> str:
    # The proxy length, the CPU and search-val keep their old id, so caches written before rungs, devices
    # and test splits existed stay valid; a result from another device or split is another result (a
    # search-val AP never answers for test).
    base = f"{cls_loss}|{reg_loss}|{seed}"
    if multiplier != 1:
        base = f"{base}|x{multiplier}"
    if device != "cpu":
        base = f"{base}|{device}"
    return base if split == "val" else f"{base}|{split}"


@dataclass(frozen=True)
class SubTask:
    """One proxy task of a search: its label ("" for a single-task search, else its DETECTOR:DATA:SIZE:
    ITERATIONS text), the settings its workers load it with, and its rung-0 schedule."""

    label: str
    settings: dict[str, Any]
    schedule: Schedule


def sub_tasks(cfg: SearchConfig) -> list[SubTask]:
    """The search's proxy tasks: the task section alone, or one per `--proxy-task` text, each the task's
    settings with the text's detector, data and image size, and the text's length."""
    base = base_schedule(cfg)
    if not cfg.task.proxy_tasks:
        return [SubTask("", cfg.task.settings, base)]
    return [
        SubTask(label, settings, dataclasses.replace(base, iterations=iterations, epochs=None))
        for label, settings, iterations in proxy_task_settings(cfg)
    ]


class ProxyRunner:
    def __init__(
        self,
        cfg: SearchConfig,
        run: RunDir,
        submit: Callable[..., Future],
        slots: int,
        on_done: Callable[[dict[str, Any]], None] | None = None,
        task: Callable[..., dict[str, Any]] = proxy_task,
    ):
        # The task travels to workers as its name and settings (they load it themselves).
        self.task_name = cfg.task.name
        self.tasks = sub_tasks(cfg)
        self.schedule = base_schedule(cfg)
        self.device = cfg.task.device
        self.task = task  # a seam for tests: a stand-in for `proxy_task`, with its signature
        self.timeout = cfg.backend.trial_timeout_s
        self.run = run
        self.submit = submit
        self.slots = max(1, slots)
        self.on_done = on_done
        self.cache: dict[str, dict[str, Any]] = {r["id"]: r["result"] for r in run.read(EVALUATIONS)}
        # Proxy-length trainings the search has asked for (cached or not): the budget's unit, so a 3x
        # training counts 3, and a candidate on 2 tasks counts 2.
        self.count = 0
        self.max_same_failures = cfg.backend.max_same_failures
        self._streak: tuple[str, int] = ("", 0)  # (failure kind, trainings in a row that failed so)

    def evaluate(
        self, jobs: list[tuple[str, str, int]], multiplier: int = 1, split: str = "val"
    ) -> list[dict[str, Any]]:
        """Results for (cls, reg, seed) jobs at `multiplier` times the proxy length, scored on `split`
        ("val": search-val, "test"), in job order: on several tasks, one combined result per job
        (`fitness.combine`: AP relative to the default's on the same task and seeds). At most `slots`
        trainings run at once, and a new one starts as each finishes, so no worker waits for the slowest
        of a batch."""
        self.count += multiplier * len(jobs) * len(self.tasks)
        if len(self.tasks) == 1:
            return self._train([(0, *job) for job in jobs], multiplier, split)
        # Every task's default on the same seeds is the reference: trained once per task and rung (cached).
        seeds = sorted({s for _, _, s in jobs})
        wanted = list(dict.fromkeys([*jobs, *((DEFAULT, DEFAULT, s) for s in seeds)]))
        # Task-major order: a worker keeps a task's data loaded, so its trainings come together.
        items = [(t, *job) for t in range(len(self.tasks)) for job in wanted]
        results = dict(zip(items, self._train(items, multiplier, split), strict=True))
        default_aps = {
            task.label: [ap_of(results[(t, DEFAULT, DEFAULT, s)]) for s in seeds]
            for t, task in enumerate(self.tasks)
        }
        return [
            combine({task.label: results[(t, *job)] for t, task in enumerate(self.tasks)}, default_aps)
            for job in jobs
        ]

    def _train(
        self, items: list[tuple[int, str, str, int]], multiplier: int, split: str
    ) -> list[dict[str, Any]]:
        """(task index, cls, reg, seed) trainings, from the cache or the workers, in item order."""
        results: dict[int, dict[str, Any]] = {}
        todo: list[int] = []
        for i, (t, c, r, s) in enumerate(items):
            cached = self.cache.get(self._id(t, c, r, s, multiplier, split))
            if cached is not None:
                results[i] = cached
            else:
                todo.append(i)
        running: dict[Future, tuple[int, int, float]] = {}  # future -> (item index, attempt, deadline)
        queue = [(i, 1) for i in todo]
        while queue or running:
            while queue and len(running) < self.slots:
                i, attempt = queue.pop(0)
                t, c, r, s = items[i]
                task = self.tasks[t]
                deadline = time.monotonic() + self.timeout if self.timeout is not None else float("inf")
                schedule = dataclasses.replace(task.schedule.scaled(multiplier), seed=s, split=split)
                spec = trial_spec(self.task_name, task.settings, schedule)
                running[self.submit(self.task, spec, c, r)] = (i, attempt, deadline)
            first_deadline = min(d for _, _, d in running.values())
            wait_s = None if first_deadline == float("inf") else max(0.0, first_deadline - time.monotonic())
            wait(list(running), timeout=wait_s, return_when=FIRST_COMPLETED)
            now = time.monotonic()
            for f in list(running):
                i, attempt, deadline = running[f]
                if f.done():  # a result that arrived by its deadline counts, even if seen a little late
                    error = f.exception()
                elif deadline <= now:
                    # Killing the worker frees its core (or GPU) for the retry; the late result is ignored.
                    error = TrialTimeout(f"ran past the per-trial timeout of {self.timeout:g} s")
                    stop_task(f, error)
                else:
                    continue
                del running[f]
                if error is not None and not isinstance(error, Exception):
                    raise error  # KeyboardInterrupt or SystemExit from a serial task: the user's, not a fault
                if error is None:
                    result = f.result()
                elif attempt == 1:  # the worker died, the task raised, ran out of memory or time
                    queue.append((i, 2))
                    continue
                else:
                    result = _failure(f"{type(error).__name__}: {error} (after a retry)")
                self._finish(items[i], multiplier, split, result)
                results[i] = result
        return [results[i] for i in range(len(items))]

    def evaluate_pairs(
        self,
        pairs: list[tuple[str, str]],
        seeds: list[int] | tuple[int, ...],
        multiplier: int = 1,
        split: str = "val",
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every distinct (cls, reg) pair on every seed at `multiplier` times the proxy length, scored on
        `split`: the results per pair, in seed order (one `evaluate` call, so all of them share the
        workers)."""
        pairs = list(dict.fromkeys(pairs))
        results = iter(self.evaluate([(c, r, s) for c, r in pairs for s in seeds], multiplier, split))
        return {pair: [next(results) for _ in seeds] for pair in pairs}

    def _id(self, t: int, c: str, r: str, s: int, multiplier: int, split: str) -> str:
        base = eval_id(c, r, s, multiplier, self.device, split)
        label = self.tasks[t].label
        return f"{label}#{base}" if label else base

    def _finish(
        self, item: tuple[int, str, str, int], multiplier: int, split: str, result: dict[str, Any]
    ) -> None:
        t, c, r, s = item
        key = self._id(t, c, r, s, multiplier, split)
        record = {"id": key, "cls": c, "reg": r, "seed": s, "multiplier": multiplier, "result": result}
        if self.tasks[t].label:
            record["task"] = self.tasks[t].label
        if self.device != "cpu":
            record["device"] = self.device
        if split != "val":
            record["split"] = split
        failpoint("proxy-result")
        self.run.append(EVALUATIONS, [record])
        self.cache[key] = result
        if self.on_done is not None:
            self.on_done(record)
        self._breaker(result)

    def _breaker(self, result: dict[str, Any]) -> None:
        """Stop the search when `max_same_failures` trainings in a row failed for one reason. Only "failed"
        counts: a loss that diverges is a result about the loss. The result is already in the journal."""
        if result.get("status") != "failed":
            self._streak = ("", 0)
            return
        kind = failure_kind(str(result.get("reason", "")))
        count = self._streak[1] + 1 if self._streak[0] == kind else 1
        self._streak = (kind, count)
        if count >= self.max_same_failures:
            raise ProxyBroken(
                f"{count} proxy trainings in a row failed the same way: "
                f"{first_line(result.get('reason'))} — {FIX_HINT}"
            )


def _failure(reason: str) -> dict[str, Any]:
    return {
        "status": "failed",
        "reason": reason,
        "metrics": {},
        "iterations": 0,
        "seconds": 0.0,
        "final_loss": None,
        "finished_at": time.time(),
    }
