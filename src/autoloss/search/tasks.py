"""The work sent to executors: module-level functions of plain data, safe to pickle to any worker.

A task never raises for a bad candidate: a crash becomes a result with status "failed" and its reason,
so one broken loss cannot end the search.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

# Loaded datasets per worker process, keyed by their settings: a worker that trains many proxies
# generates or reads its data once.
_DATA_CACHE: dict[tuple, Any] = {}


def screen_task(texts: list[str], branch: str, cpv: bool, mos: bool) -> list[dict[str, Any]]:
    from autoloss.checks import screen_texts

    return screen_texts(texts, branch, None, cpv=cpv, mos=mos)


def _data_for(cfg: Any) -> Any:
    from autoloss.detection import load_dataset

    key = (cfg.data, cfg.images, cfg.image_size, cfg.data_seed, cfg.train_size, cfg.val_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()  # one dataset at a time: a worker serves one search
        _DATA_CACHE[key] = load_dataset(
            cfg.data,
            cfg.images,
            cfg.image_size,
            cfg.data_seed,
            train_size=cfg.train_size,
            val_size=cfg.val_size,
        )
    return _DATA_CACHE[key]


def proxy_task(experiment: dict[str, Any], cls_loss: str, reg_loss: str) -> dict[str, Any]:
    """Train and evaluate one detector; returns `RunResult.to_dict()` (status ok/diverged/failed)."""
    start = time.perf_counter()
    try:
        from autoloss.detection import ExperimentConfig, run_experiment

        cfg = ExperimentConfig.from_dict(experiment)
        result, _ = run_experiment(cfg, cls_loss=cls_loss, reg_loss=reg_loss, data=_data_for(cfg))
        return result.to_dict()
    except Exception as exc:
        return {
            "status": "failed",
            "reason": f"{type(exc).__name__}: {exc}",
            "metrics": {},
            "iterations": 0,
            "seconds": time.perf_counter() - start,
            "final_loss": None,
            "traceback": traceback.format_exc(limit=5),
        }
