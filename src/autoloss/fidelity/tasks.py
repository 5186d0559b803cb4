"""Tasks a panel is trained on, and the training itself: every (task, loss pair, seed) through the
search's proxy runner, cached on disk per training protocol (`<out>/tasks/<task>-<hash>/evaluations.jsonl`,
keyed by the data's content and the resolved settings: `runs.cell_cache`), so an interrupted fidelity run
re-run with the same `--out` trains only what is missing. Proxies are scored on search-val (what a search
would select on), targets on test (held-out images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError
from autoloss.evolution.config import SearchConfig
from autoloss.evolution.progress import Tally
from autoloss.evolution.proxy import ProxyRunner, ap_of
from autoloss.executors import make_executor
from autoloss.runs.cell_cache import cell_folder, identity
from autoloss.runs.rundir import RunDir
from autoloss.tasks import DEFAULT_TASK, TaskError
from autoloss.tasks.spec import parse_task_text
from autoloss.transfer.run import (
    cached_jobs,
    cell_config,
    data_stem,
    progress_event,
    safe_name,
    tally_reporter,
    task_suffix,
)


class FidelityError(AutolossError):
    """A fidelity request that cannot work; the message says what would."""


@dataclass(frozen=True)
class TaskSpec:
    """One training protocol: a detector on a dataset at an image size for a number of iterations."""

    detector: str
    data: str
    image_size: int | None
    iterations: int
    backbone: str = "tiny"
    task: str = DEFAULT_TASK  # the proxy task that trains it: the detection task or a user's built on it
    split: str = "val"  # what it is scored on: "val" (search-val) for proxies, "test" for targets
    # further task settings, as `autoloss search` takes them from its flags (preset, weights, resize, ...)
    extra: dict[str, Any] = field(default_factory=dict, compare=True, hash=False)

    @property
    def protocol(self) -> str:
        """The training protocol's readable name (one cache for its search-val and test results)."""
        size = f"{self.image_size}px" if self.image_size else "native"
        base = f"{self.detector}-{self.backbone}-{data_stem(self.data)}-{size}-{self.iterations}it"
        return safe_name(base) + task_suffix(self.task)

    @property
    def name(self) -> str:
        return self.protocol if self.split == "val" else f"{self.protocol}@{self.split}"

    def config(self, device: str = "cpu") -> SearchConfig:
        return cell_config(
            self.detector,
            self.data,
            self.iterations,
            None,
            device,
            self.backbone,
            self.image_size,
            self.task,
            self.extra,
        )


def parse_task(
    text: str,
    backbone: str = "tiny",
    task: str = DEFAULT_TASK,
    split: str = "val",
    extra: dict[str, Any] | None = None,
) -> TaskSpec:
    """`DETECTOR:DATA:SIZE:ITERATIONS`, e.g. `fcos:bccd:256:300`; SIZE may be `native` (the dataset's own
    default). DATA is a dataset name (`autoloss data list`, or shapes / shapes-dense) or a COCO
    annotations JSON. `split` is what the task is scored on ("val" or "test")."""
    try:
        t = parse_task_text(text)
    except TaskError as exc:
        raise FidelityError(str(exc)) from None
    return TaskSpec(t.detector, t.data, t.image_size, t.iterations, backbone, task, split, dict(extra or {}))


def train_panel(
    tasks: list[TaskSpec],
    pairs: list[tuple[str, str]],
    seeds: list[int],
    out: str | Path,
    *,
    device: str = "cpu",
    backend: str = "process",
    workers: int = 2,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every (cls, reg) pair on every task and seed; one record per training (AP 0 if it failed).
    `progress` gets a `transfer.run.progress_event` per training, done here or found in the cache; the
    ETA weighs each training by its task's iterations."""
    out = Path(out)
    executor = make_executor(backend, workers, device=device)
    records: list[dict[str, Any]] = []
    pairs = list(dict.fromkeys(pairs))
    per_task = len(pairs) * len(seeds)
    tally = Tally(per_task * len(tasks), per_task * sum(t.iterations for t in tasks), executor.slots)
    try:
        for task in tasks:
            cfg = task.config(device)
            task_dir = cell_folder(out / "tasks", task.protocol, identity(cfg))
            on_done = tally_reporter(tally, task.iterations, progress)
            runner = ProxyRunner(cfg, RunDir(task_dir), executor.submit, executor.slots, on_done=on_done)
            cached = cached_jobs(runner, [(c, r, s) for c, r in pairs for s in seeds], task.split)
            if cached:
                estimate = tally.cached(cached, cached * task.iterations)
                if progress is not None:
                    progress(progress_event("cached", estimate, count=cached))
            for (c, r), runs in runner.evaluate_pairs(pairs, seeds, split=task.split).items():
                for s, res in zip(seeds, runs, strict=True):
                    records.append(
                        {
                            "task": task.name,
                            "cls": c,
                            "reg": r,
                            "seed": s,
                            "ap": ap_of(res),
                            "status": res.get("status"),
                            "metrics": res.get("metrics", {}),
                        }
                    )
    finally:
        executor.shutdown()
    return records
