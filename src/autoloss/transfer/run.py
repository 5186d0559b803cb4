"""Run a transfer plan: every (detector, dataset) cell through the proxy runner, trained on train and
scored on the test split, results cached on disk (`<out>/cells/<detector>-<dataset>-...-<hash>/
evaluations.jsonl`, keyed by the data's content and the resolved settings: `runs.cell_cache`), so an
interrupted transfer re-run with the same `--out` trains only what is missing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoloss.data_specs import is_builtin, is_generated
from autoloss.evolution.config import SearchConfig, TaskConfig
from autoloss.evolution.progress import Estimate, Tally
from autoloss.evolution.proxy import ProxyRunner, eval_id
from autoloss.executors import make_executor
from autoloss.runs.cell_cache import cell_folder, identity
from autoloss.runs.rundir import RunDir
from autoloss.tasks import DEFAULT_TASK
from autoloss.transfer.plan import TransferPlan

PROXY_ITERATIONS = TaskConfig().iterations or 300


def data_stem(data: str) -> str:
    """A short, readable name for a dataset spec: a generated or built-in dataset's name, else the COCO
    JSON's folder (only for reading: caches are keyed by content, `runs.cell_cache`)."""
    if is_generated(data) or is_builtin(data):
        return data
    return Path(data).parent.name or Path(data).stem


def safe_name(text: str) -> str:
    """`text` usable as a folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def task_suffix(task: str) -> str:
    """A user's task gets cells of its own: its results are not the built-in detector's."""
    return (
        ""
        if task == DEFAULT_TASK
        else "-" + safe_name(Path(task.rsplit(":", 1)[0]).stem + "." + task.rsplit(":", 1)[-1])
    )


def cell_name(detector: str, data: str) -> str:
    return safe_name(f"{detector}-{data_stem(data)}")


def cell_config(
    detector: str,
    data: str,
    iterations: int | None,
    epochs: int | None,
    device: str,
    backbone: str = "tiny",
    image_size: int | None = None,
    task: str = DEFAULT_TASK,
    extra: dict[str, Any] | None = None,
) -> SearchConfig:
    """A cell is the search's proxy task with another detector, dataset, length (and image size); `task`
    is the detection task or a user's task built on it (it takes the same settings). `extra` are further
    task settings, as `autoloss search` takes them from its flags (`cli.common.task_settings`: preset,
    weights file, resize, training settings under "train"); the cell's own detector, data, backbone and
    image size win over them."""
    extra = dict(extra or {})
    size = image_size if image_size is not None else extra.get("image_size")
    settings = {**extra, "detector": detector, "backbone": backbone, "data": data, "image_size": size}
    return SearchConfig().replace(
        task={
            "name": task,
            "settings": settings,
            "iterations": iterations,
            "epochs": epochs,
            "device": device,
        }
    )


Progress = Callable[[dict[str, Any]], None]


def cached_jobs(runner: ProxyRunner, jobs: list[tuple[str, str, int]], split: str) -> int:
    """How many (cls, reg, seed) jobs of a one-task runner at the proxy length its cache already holds."""
    return sum(eval_id(c, r, s, 1, runner.device, split) in runner.cache for c, r, s in jobs)


def progress_event(kind: str, estimate: Estimate, **fields: Any) -> dict[str, Any]:
    """What a fidelity or transfer run reports to its `progress` callback: "training" (one finished here;
    `record` is its journal record) or "cached" (`count` taken from an earlier run's cache), with where the
    work stands (`Estimate.to_dict`: done, total, left, seconds_per_training, eta_s, workers)."""
    return {"type": kind, **estimate.to_dict(), **fields}


def tally_reporter(tally: Tally, work: float, progress: Progress | None) -> Callable[[dict[str, Any]], None]:
    """A `ProxyRunner.on_done` that counts each finished training of `work` units and reports it."""

    def on_done(record: dict[str, Any]) -> None:
        estimate = tally.trained((record.get("result") or {}).get("seconds"), work)
        if progress is not None:
            progress(progress_event("training", estimate, record=record))

    return on_done


def run_transfer(
    plan: TransferPlan,
    out: str | Path,
    *,
    iterations: int | None = PROXY_ITERATIONS,
    epochs: int | None = None,
    schedule: float = 5.0,
    device: str = "cpu",
    backend: str = "process",
    workers: int = 2,
    backbone: str = "tiny",
    progress: Progress | None = None,
    task: str = DEFAULT_TASK,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train everything in `plan` (each cell on its dataset's train split, scored on test); `settings` are
    further task settings for every cell (see `cell_config`). Returns one record per (detector, dataset,
    row, seed). `progress` gets a `progress_event` per training, done here or found in the cache."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    length_iters = None if epochs is not None else max(1, round((iterations or PROXY_ITERATIONS) * schedule))
    length_epochs = None if epochs is None else max(1, round(epochs * schedule))
    executor = make_executor(backend, workers, device=device)
    records: list[dict[str, Any]] = []
    # Every training has the same length here: one unit of work each.
    tally = Tally(plan.trainings(), plan.trainings(), executor.slots)
    try:
        for detector, data in plan.cells():
            # The length is part of the name: the cache must never answer for another schedule.
            length = f"{length_iters}it" if length_iters is not None else f"{length_epochs}ep"
            cfg = cell_config(
                detector, data, length_iters, length_epochs, device, backbone, task=task, extra=settings
            )
            readable = f"{cell_name(detector, data)}-{backbone}-{length}{task_suffix(task)}"
            cell_dir = cell_folder(out / "cells", readable, identity(cfg))
            on_done = tally_reporter(tally, 1.0, progress)
            runner = ProxyRunner(cfg, RunDir(cell_dir), executor.submit, executor.slots, on_done=on_done)
            rows = plan.rows[detector]
            jobs = [(r.cls, r.reg, s) for r in rows for s in plan.seeds]
            cached = cached_jobs(runner, jobs, "test")
            if cached:
                estimate = tally.cached(cached, cached)
                if progress is not None:
                    progress(progress_event("cached", estimate, count=cached))
            results = runner.evaluate(jobs, split="test")
            for (cls_, reg_, seed), res in zip(jobs, results, strict=True):
                label = next(r.label for r in rows if (r.cls, r.reg) == (cls_, reg_))
                records.append(
                    {
                        "detector": detector,
                        "data": data,
                        "label": label,
                        "cls": cls_,
                        "reg": reg_,
                        "seed": seed,
                        "status": res.get("status"),
                        "reason": res.get("reason", ""),
                        "metrics": res.get("metrics", {}),
                    }
                )
    finally:
        executor.shutdown()
    return records
