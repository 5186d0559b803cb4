"""Tasks a panel is trained on, and the training itself: every (task, loss pair, seed) through the
search's proxy runner, cached on disk per task (`<out>/tasks/<task>/evaluations.jsonl`), so an
interrupted fidelity run re-run with the same `--out` trains only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss.data_specs import is_generated
from autoloss.errors import AutolossError
from autoloss.evolution.config import SearchConfig
from autoloss.evolution.proxy import ProxyRunner, ap_of
from autoloss.executors import make_executor
from autoloss.runs.rundir import RunDir
from autoloss.spaces.branches import DETECTOR_CLS_BRANCH as DETECTOR_BRANCH
from autoloss.tasks import DEFAULT_TASK
from autoloss.transfer.run import cell_config, data_stem, safe_name, task_suffix


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

    @property
    def name(self) -> str:
        size = f"{self.image_size}px" if self.image_size else "native"
        base = f"{self.detector}-{self.backbone}-{data_stem(self.data)}-{size}-{self.iterations}it"
        return safe_name(base) + task_suffix(self.task)

    def config(self, device: str = "cpu") -> SearchConfig:
        return cell_config(
            self.detector, self.data, self.iterations, None, device, self.backbone, self.image_size, self.task
        )


def parse_task(text: str, backbone: str = "tiny", task: str = DEFAULT_TASK) -> TaskSpec:
    """`DETECTOR:DATA:SIZE:ITERATIONS`, e.g. `fcos:shapes:256:300`; SIZE may be `native` (the dataset's own
    default). DATA is `shapes`, `shapes-dense` or a COCO annotations JSON."""
    parts = text.split(":")
    if len(parts) < 4:
        raise FidelityError(
            f"task {text!r} must read DETECTOR:DATA:SIZE:ITERATIONS, e.g. fcos:shapes:128:300"
        )
    detector, size, iters = parts[0], parts[-2], parts[-1]
    data = ":".join(parts[1:-2])
    if detector not in DETECTOR_BRANCH:
        raise FidelityError(
            f"task {text!r}: unknown detector {detector!r}; detectors: {', '.join(DETECTOR_BRANCH)}"
        )
    if not is_generated(data) and not Path(data).is_file():
        raise FidelityError(
            f"task {text!r}: dataset {data!r} is neither 'shapes' nor an existing COCO JSON file"
        )
    try:
        image_size = None if size == "native" else int(size)
        iterations = int(iters)
    except ValueError:
        raise FidelityError(
            f"task {text!r}: SIZE and ITERATIONS must be integers (SIZE may be 'native')"
        ) from None
    if image_size is not None and (image_size < 32 or image_size % 32):
        raise FidelityError(f"task {text!r}: image size must be a positive multiple of 32, got {image_size}")
    if iterations < 1:
        raise FidelityError(f"task {text!r}: iterations must be positive, got {iterations}")
    return TaskSpec(detector, data, image_size, iterations, backbone, task)


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
    """Train every (cls, reg) pair on every task and seed; one record per training (AP 0 if it failed)."""
    out = Path(out)
    executor = make_executor(backend, workers, device=device)
    records: list[dict[str, Any]] = []
    try:
        for task in tasks:
            task_dir = out / "tasks" / task.name
            task_dir.mkdir(parents=True, exist_ok=True)
            runner = ProxyRunner(
                task.config(device), RunDir(task_dir), executor.submit, executor.slots, on_done=progress
            )
            for (c, r), runs in runner.evaluate_pairs(pairs, seeds).items():
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
