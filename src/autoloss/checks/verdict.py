"""What a filter returns (`Verdict`) and what the pipeline returns (`ScreenResult`): plain JSON data."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

# The stages in pipeline order; `ScreenResult.stage` is the last one reached ("passed" after all).
STAGES = ("validity", "dedup", "cpv", "mos", "passed")


@dataclass(frozen=True)
class Verdict:
    """One filter's judgement. `score` is None where the filter has no score; it is never NaN."""

    name: str
    passed: bool
    reason: str
    score: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "reason": self.reason,
            "score": self.score,
            "seconds": self.seconds,
        }


@dataclass
class ScreenResult:
    """The pipeline's outcome for one candidate; `reason` is the failing filter's (or "passed")."""

    verdicts: list[Verdict] = field(default_factory=list)
    passed: bool = False
    stage: str = "validity"
    reason: str = ""
    key: str | None = None
    mos_score: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # Written out rather than `asdict`, whose deep copy cost a tenth of a cheap candidate's screening.
        return {
            "verdicts": [v.to_dict() for v in self.verdicts],
            "passed": self.passed,
            "stage": self.stage,
            "reason": self.reason,
            "key": self.key,
            "mos_score": self.mos_score,
            "seconds": self.seconds,
        }


def finite_or_none(value: float | None) -> float | None:
    """Scores go to JSON; NaN and inf are not JSON, so they become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def run_filter(name: str, check: Callable[[], tuple[bool, str, float | None]]) -> Verdict:
    """Time `check` and wrap its (passed, reason, score) as a Verdict.

    A candidate that crashes a filter is rejected by it, with the exception as the reason: a search screens
    millions of generated expressions, and one that raises in a way nobody foresaw is a fact about that
    loss, not a reason to stop the search and lose its finished work.
    """
    start = time.perf_counter()
    try:
        with single_thread():
            passed, reason, score = check()
    except Exception as exc:  # any failure inside the candidate's own computation is a rejection
        passed, reason, score = False, f"crashed: {type(exc).__name__}: {exc}", None
    return Verdict(name, bool(passed), reason, finite_or_none(score), time.perf_counter() - start)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, restoring the caller's setting afterwards.

    The filters' tensors are tiny: extra threads only add synchronisation, and on a loaded 2-core machine
    two threads made MOS 10-50x slower than one. Parallelism belongs to the caller (one worker per core).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
