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

# Loaded datasets per worker process, keyed by their settings: a worker that trains many proxies
# generates or reads its data once.
_DATA_CACHE: dict[tuple, Any] = {}


def screen_task(texts: list[str], branch: str, cpv: bool, mos: bool) -> list[dict[str, Any]]:
    from autoloss.checks import screen_texts

    return screen_texts(texts, branch, None, cpv=cpv, mos=mos)


def _data_for(cfg: Any) -> Any:
    from autoloss.detection.runner import data_key, load_experiment_data

    key = data_key(cfg)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time: a worker serves one search
        _DATA_CACHE[key] = load_experiment_data(cfg)
    return _DATA_CACHE[key]


def _out_of_memory(reason: str) -> OutOfMemory:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # hand the cached blocks back before this worker takes the next trial
    return OutOfMemory(f"CUDA out of memory in the proxy training: {reason}")


@trial
def proxy_task(experiment: dict[str, Any], cls_loss: str, reg_loss: str) -> dict[str, Any]:
    """Train and evaluate one detector; returns `RunResult.to_dict()` (status ok/diverged/failed).

    Raises `OutOfMemory` when the GPU ran out of memory."""
    start = time.perf_counter()
    try:
        from autoloss.detection import ExperimentConfig, run_experiment

        cfg = ExperimentConfig.from_dict(experiment)
        result, _ = run_experiment(cfg, cls_loss=cls_loss, reg_loss=reg_loss, data=_data_for(cfg))
        out = result.to_dict()
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
    # The training loop turns every exception into a "failed" result, out of memory included.
    if out.get("status") == "failed" and "OutOfMemoryError:" in str(out.get("reason", "")):
        raise _out_of_memory(out["reason"])
    return out
