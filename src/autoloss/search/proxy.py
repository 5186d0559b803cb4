"""Proxy trainings for the search: the experiment config, the result cache, retries and the budget.

Every finished training is appended to `evaluations.jsonl` the moment it completes, keyed by
(cls loss, reg loss, seed). A resumed search replays its deterministic decisions and takes finished
trainings from this cache, so only the trainings that were in flight when it was killed run again.

Faults are contained here, the same way on every backend: a training whose worker died, that raised,
that ran out of GPU memory or that passed `trial_timeout_s` (its worker is killed) is retried once, then
recorded as failed with the reason — worst fitness, and the search goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from autoloss.data_specs import is_generated
from autoloss.executors.base import TrialTimeout, stop_task
from autoloss.runs.rundir import RunDir
from autoloss.search.config import SearchConfig
from autoloss.search.tasks import proxy_task

EVALUATIONS = "evaluations.jsonl"


def experiment_dict(cfg: SearchConfig) -> dict[str, Any]:
    """The detection layer's ExperimentConfig (as a dict) for this search's proxy task, seed unset."""
    from autoloss.detection import preset

    p = cfg.proxy
    train: dict[str, Any] = {"device": p.device}
    if p.iterations is not None:
        train["iterations"] = p.iterations
    if p.epochs is not None:
        train["epochs"] = p.epochs
    if p.lr is not None:
        train["lr"] = p.lr
    overrides: dict[str, Any] = {
        "detector": p.detector,
        "backbone": p.backbone,
        "data": p.data,
        "images": p.images,
    }
    if not is_generated(p.data):
        overrides["image_size"] = None  # the dataset's own default: real photos need more than shapes' 128 px
    for name in ("image_size", "train_size", "val_size"):
        if getattr(p, name) is not None:
            overrides[name] = getattr(p, name)
    return preset(p.preset, train=train, **overrides).to_dict()


def eval_id(cls_loss: str, reg_loss: str, seed: int, multiplier: int = 1) -> str:
    # The proxy length keeps its old id, so caches written before rungs existed stay valid.
    base = f"{cls_loss}|{reg_loss}|{seed}"
    return base if multiplier == 1 else f"{base}|x{multiplier}"


def scaled(experiment: dict[str, Any], multiplier: int) -> dict[str, Any]:
    """The experiment with its training length (iterations or epochs) multiplied."""
    if multiplier == 1:
        return experiment
    train = dict(experiment["train"])
    for name in ("iterations", "epochs"):
        if train.get(name) is not None:
            train[name] = int(train[name]) * multiplier
    # The same recipe, trained longer: the cosine decay spans the whole longer schedule (the warm-up
    # keeps its length in iterations).
    return {**experiment, "train": train}


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
        self.experiment = experiment_dict(cfg)
        self.task = task  # a seam for tests: a stand-in training with the same signature
        self.timeout = cfg.backend.trial_timeout_s
        self.run = run
        self.submit = submit
        self.slots = max(1, slots)
        self.on_done = on_done
        self.cache: dict[str, dict[str, Any]] = {r["id"]: r["result"] for r in run.read(EVALUATIONS)}
        # Proxy-length trainings the search has asked for (cached or not): the budget's unit, so a 3x
        # training counts 3.
        self.count = 0

    def evaluate(self, jobs: list[tuple[str, str, int]], multiplier: int = 1) -> list[dict[str, Any]]:
        """Results for (cls, reg, seed) jobs at `multiplier` times the proxy length, in job order. At most
        `slots` trainings run at once, and a new one starts as each finishes, so no worker waits for the
        slowest of a batch."""
        results: dict[int, dict[str, Any]] = {}
        todo: list[int] = []
        experiment = scaled(self.experiment, multiplier)
        for i, (c, r, s) in enumerate(jobs):
            self.count += multiplier
            cached = self.cache.get(eval_id(c, r, s, multiplier))
            if cached is not None:
                results[i] = cached
            else:
                todo.append(i)
        running: dict[Future, tuple[int, int, float]] = {}  # future -> (job index, attempt, deadline)
        queue = [(i, 1) for i in todo]
        while queue or running:
            while queue and len(running) < self.slots:
                i, attempt = queue.pop(0)
                c, r, s = jobs[i]
                deadline = time.monotonic() + self.timeout if self.timeout is not None else float("inf")
                running[self.submit(self.task, {**experiment, "seed": s}, c, r)] = (i, attempt, deadline)
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
                self._finish(jobs[i], multiplier, result)
                results[i] = result
        return [results[i] for i in range(len(jobs))]

    def evaluate_pairs(
        self, pairs: list[tuple[str, str]], seeds: list[int] | tuple[int, ...], multiplier: int = 1
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """Every distinct (cls, reg) pair on every seed at `multiplier` times the proxy length: the results
        per pair, in seed order (one `evaluate` call, so all of them share the workers)."""
        pairs = list(dict.fromkeys(pairs))
        results = iter(self.evaluate([(c, r, s) for c, r in pairs for s in seeds], multiplier))
        return {pair: [next(results) for _ in seeds] for pair in pairs}

    def _finish(self, job: tuple[str, str, int], multiplier: int, result: dict[str, Any]) -> None:
        c, r, s = job
        key = eval_id(c, r, s, multiplier)
        record = {"id": key, "cls": c, "reg": r, "seed": s, "multiplier": multiplier, "result": result}
        self.run.append(EVALUATIONS, [record])
        self.cache[key] = result
        if self.on_done is not None:
            self.on_done(record)


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


def ap_of(result: dict[str, Any]) -> float:
    """The fitness: COCO AP of a finished training, 0 for one that diverged or failed."""
    if result.get("status") != "ok":
        return 0.0
    return float(result.get("metrics", {}).get("AP", 0.0))
