"""A stand-in proxy task for the protocol's tests: it trains nothing, so a whole search through it takes
seconds. AP is a fixed function of the losses, the seed and the length, so results can be predicted."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from autoloss.tasks import ProxyTask, Schedule, TaskError, TrainReport


def expected_ap(
    cls_loss: str, reg_loss: str, seed: int, iterations: int, favour: Mapping[str, float] | None = None
) -> float:
    """`favour`: loss text -> AP added to every pair that trains it (a test that needs a given winner)."""
    digest = hashlib.sha256(f"{cls_loss}|{reg_loss}|{seed}".encode()).digest()
    bonus = sum((favour or {}).get(t, 0.0) for t in (cls_loss, reg_loss))
    return round(0.1 + 0.5 * digest[0] / 255 + 1e-4 * iterations + bonus, 6)


class EchoTask(ProxyTask):
    def __init__(self, settings: Mapping[str, Any]):
        self.branch = settings.get("branch", "cls-sigmoid")
        self.data = settings.get("data_file")  # optional: a file whose hash the run directory records
        # optional: trainings longer than this many iterations diverge (a loss that breaks on a long rung)
        self.diverge_over = settings.get("diverge_over")
        self.favour = dict(settings.get("favour") or {})
        if self.branch not in ("cls-sigmoid", "cls-softmax"):
            raise TaskError(f"echo task: branch must be cls-sigmoid or cls-softmax, got {self.branch!r}")

    @property
    def cls_branch(self) -> str:
        return self.branch

    def config(self) -> dict[str, Any]:
        out = {"branch": self.branch, **({"data_file": self.data} if self.data else {})}
        out |= {"favour": self.favour} if self.favour else {}
        return out | ({"diverge_over": self.diverge_over} if self.diverge_over is not None else {})

    def input_files(self) -> list[str]:
        return [self.data] if self.data else []

    def build(self, cls_loss: str, reg_loss: str, seed: int) -> dict[str, Any]:
        if "Log(Neg(" in cls_loss:  # a stand-in for a loss that cannot be built into a model
            raise ValueError("echo task cannot build this loss")
        return {"cls": cls_loss, "reg": reg_loss, "seed": seed}

    def train(self, model: Any, schedule: Schedule, progress: Any = None) -> TrainReport:
        model["iterations"] = schedule.iterations or 0
        if self.diverge_over is not None and model["iterations"] > self.diverge_over:
            return TrainReport("diverged", "iteration 7: loss is nan", 7, 0.0, None, [2.0])
        return TrainReport("ok", "", model["iterations"], 0.0, 1.0, [2.0, 1.0])

    def evaluate(self, model: Any, schedule: Schedule) -> dict[str, float]:
        return {
            "AP": expected_ap(model["cls"], model["reg"], model["seed"], model["iterations"], self.favour)
        }


def make_task(settings: Mapping[str, Any]) -> EchoTask:
    return EchoTask(settings)


def not_a_task(settings: Mapping[str, Any]) -> str:
    return "nothing"
