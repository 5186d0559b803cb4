"""The work sent to executors: module-level functions of plain data, safe to pickle to any worker.

A task never raises for a bad candidate: a crash becomes a result with status "failed" and its reason,
so one broken loss cannot end the search. The exception is running out of GPU memory, which says more
about the worker (a busy or fragmented GPU) than about the loss: it raises `OutOfMemory` so the search
retries the training once, as it would after a lost worker.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from autoloss.executors.base import OutOfMemory, trial
from autoloss.runs.failpoints import failpoint
from autoloss.tasks import ProxyTask, Schedule, load_task, task_key

# The tasks each worker trains, kept between trials: a task loads its data once. A search with several
# proxy tasks sends each worker trainings of each, so a few are kept (least recently used dropped first).
_TASKS: dict[str, Any] = {}
KEEP_TASKS = 4


def screen_task(texts: list[str], branch: str, cpv: bool, mos: bool) -> list[dict[str, Any]]:
    from autoloss.checks import screen_texts

    return screen_texts(texts, branch, None, cpv=cpv, mos=mos)


def trial_spec(task: str, settings: dict[str, Any], schedule: Schedule) -> dict[str, Any]:
    """What a worker needs to run one trial of a task: plain data, safe to send anywhere."""
    return {"task": task, "settings": settings, "schedule": schedule.to_dict()}


def _task_for(task: str, settings: dict[str, Any]) -> ProxyTask:
    key = task_key(task, settings)
    if key in _TASKS:
        _TASKS[key] = _TASKS.pop(key)  # most recently used last
    else:
        while len(_TASKS) >= KEEP_TASKS:
            del _TASKS[next(iter(_TASKS))]
        _TASKS[key] = load_task(task, settings)
    return _TASKS[key]


def _out_of_memory(reason: str) -> OutOfMemory:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand the cached blocks back before this worker takes the next trial
    return OutOfMemory(f"CUDA out of memory in the proxy training: {reason}")


@trial
def proxy_task(spec: dict[str, Any], cls_loss: str, reg_loss: str) -> dict[str, Any]:
    """Run one trial (`trial_spec`) of the proxy task with these losses; returns `RunResult.to_dict()`
    (status ok/diverged/failed).

    Raises `OutOfMemory` when the GPU ran out of memory."""
    start = time.perf_counter()
    try:
        task = _task_for(spec["task"], spec["settings"])
        out = task.run(cls_loss, reg_loss, Schedule.from_dict(spec["schedule"])).to_dict()
        failpoint("proxy-training")  # trained, the result not yet sent back
    except Exception as exc:
        if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without importing torch
            raise _out_of_memory(str(exc)) from exc
        return {
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}",
            "metrics": {},
            "iterations": 0,
            "seconds": time.perf_counter() - start,
            "final_loss": None,
            "traceback": traceback.format_exc(limit=5),
        }
    # A task turns every exception in its training into a "failed" result, out of memory included.
    if out.get("status") == "failed" and "OutOfMemoryError:" in str(out.get("reason", "")):
        raise _out_of_memory(out["reason"])
    return out
