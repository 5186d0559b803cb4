"""The proxy-task protocol: what the search, `autoloss transfer` and `autoloss fidelity` need from whatever
they train.

A proxy task builds a model with given classification and regression losses, trains it for a `Schedule`
(a length in iterations or epochs, a seed, a device, a thread count) and evaluates it (COCO box metrics,
"AP" among them: the search's fitness). It owns a typed config of its own; `config()` serialises it and
the task's factory rebuilds the same task from that dict, which is how a task reaches worker processes and
how a run directory records it. The torchvision detectors (`autoloss.detection.task`) are its built-in
implementations; a user's detector is another (`autoloss.tasks.registry`).

The callers see only this module: they never import a task's internals, so any detector, framework or
dataset that implements these few methods can be searched.
"""

from __future__ import annotations

import dataclasses
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from autoloss.errors import AutolossError

ProgressFn = Callable[[int, int, float], None]  # (iteration, total, loss)
# The splits a trained model is scored on: search-val for selection, test for what is reported.
EVAL_SPLITS = ("val", "test")


class TaskError(AutolossError, ValueError):
    """A task, or a setting of one, that cannot work; the message says which and what would."""


@dataclass(frozen=True)
class Schedule:
    """How long and where one training runs, and which split it is scored on: exactly one of `iterations`
    and `epochs` is set. `split` is "val" (search-val: what every selection sees) or "test" (the final
    table, transfer and fidelity targets: never selected on)."""

    iterations: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1  # torch threads of the training; None leaves torch's setting
    split: str = "val"

    def __post_init__(self) -> None:
        if self.split not in EVAL_SPLITS:
            raise TaskError(f"schedule split must be one of {', '.join(EVAL_SPLITS)}, got {self.split!r}")
        if (self.iterations is None) == (self.epochs is None):
            raise TaskError("a schedule sets exactly one of iterations and epochs")
        for name in ("iterations", "epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise TaskError(f"schedule {name} must be a positive integer, got {value!r}")

    def scaled(self, multiplier: int) -> Schedule:
        """The same schedule `multiplier` times as long (the search's higher rungs)."""
        if multiplier == 1:
            return self
        return dataclasses.replace(
            self,
            iterations=None if self.iterations is None else self.iterations * multiplier,
            epochs=None if self.epochs is None else self.epochs * multiplier,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Schedule:
        return cls(**raw)


@dataclass
class TrainReport:
    """How a training went. `status` is "ok", "diverged" (a result about the loss) or "failed"."""

    status: str
    reason: str
    iterations: int
    seconds: float
    final_loss: float | None
    loss_curve: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    """The outcome of one trial (build, train, evaluate) as the search records it; `metrics` (AP, AP50,
    ...) is empty unless status is "ok"."""

    status: str
    reason: str
    metrics: dict[str, float]
    iterations: int
    seconds: float
    final_loss: float | None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    loss_curve: list[float | None] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def ap(self) -> float:
        """COCO AP, 0.0 for a run that did not finish (the search's fitness)."""
        return float(self.metrics.get("AP", 0.0)) if self.status == "ok" else 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        import json

        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunResult:
        return cls(**raw)


class ProxyTask(ABC):
    """One trainable detection task. Subclasses implement the abstract methods; `run` ties them together
    and turns any failure of a candidate loss into a result, so one broken loss cannot end a search."""

    @property
    @abstractmethod
    def cls_branch(self) -> str:
        """The classification search space the task's head takes: "cls-sigmoid" or "cls-softmax"."""

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The task's settings, resolved and JSON-serialisable: its factory rebuilds this task from them."""

    @abstractmethod
    def build(self, cls_loss: str, reg_loss: str, seed: int) -> Any:
        """A fresh model whose heads train with these losses (text: a named loss, a prefix expression or
        "default" for the detector's own), its weights initialised from `seed`. Raise for a loss or
        setting it cannot build with; `run` records that as a failed trial."""

    @abstractmethod
    def train(self, model: Any, schedule: Schedule, progress: ProgressFn | None = None) -> TrainReport:
        """Train `model` in place for `schedule`; report divergence or failure, never raise for them."""

    @abstractmethod
    def evaluate(self, model: Any, schedule: Schedule) -> dict[str, float]:
        """COCO box metrics of the trained model on the split `schedule.split` names ("AP" at least): "val"
        is the search-val data every selection sees, "test" held-out data that no selection sees. A task
        with one evaluation set must refuse "test" rather than answer it with search-val."""

    def check(self) -> None:
        """Raise `TaskError` for what cannot work (a missing file, a preset without its data) before any
        training starts. The default checks nothing."""
        return None

    def input_files(self) -> list[str]:
        """Files whose content decides the results (annotations, weights): a run directory records their
        hashes, and a resume against changed ones is refused. The default names none."""
        return []

    def describe_data(self) -> dict[str, Any]:
        """How the task's data was split (sizes of train / search-val / test and the method), for the run
        directory and its tables. The default describes nothing."""
        return {}

    def default_length(self) -> tuple[int | None, int | None]:
        """(iterations, epochs) the task trains for when the caller gives no length; (None, None) where it
        has no default, and the caller must give one."""
        return None, None

    def record(self, cls_loss: Any, reg_loss: Any, schedule: Schedule) -> dict[str, Any]:
        """What a result records about its trial (its `config`): the task's settings, losses and schedule."""
        return {
            **self.config(),
            "cls_loss": _text(cls_loss),
            "reg_loss": _text(reg_loss),
            "schedule": schedule.to_dict(),
        }

    def run(
        self, cls_loss: str, reg_loss: str, schedule: Schedule, progress: ProgressFn | None = None
    ) -> RunResult:
        """Build, train and evaluate one model; every failure becomes the result's status and reason."""
        return self.trial(cls_loss, reg_loss, schedule, progress)[0]

    def trial(
        self, cls_loss: Any, reg_loss: Any, schedule: Schedule, progress: ProgressFn | None = None
    ) -> tuple[RunResult, Any]:
        """`run`, also returning the trained model (None where it could not be built)."""
        start = time.perf_counter()
        record = self.record(cls_loss, reg_loss, schedule)
        try:
            model = self.build(cls_loss, reg_loss, schedule.seed)
        except Exception as err:  # a candidate the task cannot even build is a result, not a crash
            return _failed(f"{type(err).__name__}: {err}", record, start), None
        report = self.train(model, schedule, progress)
        result = RunResult(
            status=report.status,
            reason=report.reason,
            metrics={},
            iterations=report.iterations,
            seconds=0.0,
            final_loss=report.final_loss,
            train_seconds=report.seconds,
            loss_curve=[v if v is not None and math.isfinite(v) else None for v in report.loss_curve],
            config=record,
        )
        if report.status == "ok":
            eval_start = time.perf_counter()
            try:
                result.metrics = {k: float(v) for k, v in self.evaluate(model, schedule).items()}
            except Exception as err:
                result.status, result.reason = "failed", f"evaluation: {type(err).__name__}: {err}"
            result.eval_seconds = time.perf_counter() - eval_start
        result.seconds = time.perf_counter() - start
        return result, model


def _text(loss: Any) -> str:
    return loss if isinstance(loss, str) else str(getattr(loss, "text", "default" if loss is None else loss))


def _failed(reason: str, record: dict[str, Any], start: float) -> RunResult:
    return RunResult(
        status="failed",
        reason=reason,
        metrics={},
        iterations=0,
        seconds=time.perf_counter() - start,
        final_loss=None,
        config=record,
    )
