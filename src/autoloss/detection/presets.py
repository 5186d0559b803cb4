"""Named experiment configs, and `evaluate_losses`: the search's proxy-task evaluator.

"fcos-shapes" is the proxy of DESIGN.md: FCOS with the tiny backbone on generated shapes at 128 px, SGD
lr 0.02, batch 16, 50 warm-up iterations then cosine, one thread; about a minute per run on one core.
Seeds fix the initial weights and the batch order, so two losses run with the same seed are a paired
comparison. "tiny" exists for tests: a few seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autoloss.detection.runner import ExperimentConfig, RunResult, run_experiment
from autoloss.detection.train import ProgressFn, TrainConfig

PROXY_PRESETS: dict[str, ExperimentConfig] = {
    "fcos-shapes": ExperimentConfig(
        detector="fcos",
        backbone="tiny",
        data="shapes",
        image_size=128,
        train_size=800,
        val_size=200,
        train=TrainConfig(iterations=700, batch_size=16, lr=0.02, warmup_iters=50, threads=1),
    ),
    "tiny": ExperimentConfig(
        detector="fcos",
        backbone="tiny",
        data="shapes",
        image_size=64,
        train_size=64,
        val_size=32,
        train=TrainConfig(iterations=40, batch_size=8, lr=0.02, warmup_iters=5, threads=1),
    ),
}


def preset(name: str, **overrides: Any) -> ExperimentConfig:
    """A preset with top-level settings replaced; `train=dict(...)` replaces individual train settings."""
    if name not in PROXY_PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PROXY_PRESETS)}")
    base = PROXY_PRESETS[name]
    train_overrides = overrides.pop("train", None) or {}
    if isinstance(train_overrides, TrainConfig):
        train = train_overrides
    else:
        # iterations and epochs are exclusive: setting one clears the other
        if "epochs" in train_overrides and "iterations" not in train_overrides:
            train_overrides = {**train_overrides, "iterations": None}
        if "iterations" in train_overrides and "epochs" not in train_overrides:
            train_overrides = {**train_overrides, "epochs": None}
        train = dataclasses.replace(base.train, **train_overrides)
    return dataclasses.replace(base, train=train, **overrides)


def evaluate_losses(
    cls_loss: Any = None,
    reg_loss: Any = None,
    *,
    preset_name: str = "fcos-shapes",
    seed: int = 0,
    progress: ProgressFn | None = None,
    **overrides: Any,
) -> RunResult:
    """Train the preset's detector with these losses (None: stock) for one seed; return the result.

    Losses are Loss-like objects or text; the result is JSON-serialisable (`to_dict`) and its `ap` is
    the fitness (0.0 when the run diverged or failed). Raises only for a bad preset or setting.
    """
    cfg = preset(preset_name, seed=seed, **overrides)
    result, _ = run_experiment(cfg, cls_loss=cls_loss, reg_loss=reg_loss, progress=progress)
    return result
