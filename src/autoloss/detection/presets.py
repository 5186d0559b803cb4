"""Named experiment configs: the starting points of `train --preset` and of the detection task's settings.

"fcos-shapes" is the CPU proxy: FCOS with the tiny backbone on generated shapes at 128 px, SGD lr 0.02,
batch 16, 50 warm-up iterations then cosine, one thread; about a minute per run on one core. "tiny"
exists for tests: a few seconds. Seeds fix the initial weights and the batch order, so two losses run
with the same seed are a paired comparison.

The "-r50-coco" presets are the paper's setting for real use on a GPU: an ImageNet-pretrained ResNet-50
FPN with torchvision's conventions (frozen BatchNorm, three trainable stages), COCO photo sizes (short side
800, long side at most 1333, aspect kept, padded batches), torchvision's COCO anchors and RoI settings, a
seeded 10,000-image subset of the training JSON (the paper samples 10k images of COCO train2017), bf16
autocast on CUDA, four image-decoding workers. They train on your data: `--data` is required.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autoloss.detection.runner import ExperimentConfig
from autoloss.detection.train import TrainConfig

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
    **{
        f"{name.replace('_', '-')}-r50-coco": ExperimentConfig(
            detector=name,
            backbone="resnet50",
            data="",  # the user's COCO JSON: a search or train with this preset must give --data
            resize="keep-aspect",
            min_size=800,
            max_size=1333,
            train_subset=10_000,
            pretrained="DEFAULT",
            geometry="coco",
            # lr 0.01 at batch 16 is torchvision's and MMDetection's recipe for these detectors
            train=TrainConfig(
                iterations=2000,
                batch_size=16,
                lr=0.01,
                warmup_iters=500,
                threads=4,
                amp="bf16",
                loader_workers=4,
                eval_batch_size=8,
            ),
        )
        for name in ("fcos", "retinanet", "faster_rcnn")
    },
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


def describe_preset(name: str) -> str:
    """One line: what the preset trains, on what, for how long."""
    cfg = PROXY_PRESETS[name]
    t = cfg.train
    length = f"{t.iterations} iterations" if t.iterations is not None else f"{t.epochs} epochs"
    if cfg.resize == "keep-aspect":
        size = f"short side {cfg.min_size}, long side <= {cfg.max_size}"
    else:
        size = f"{cfg.image_size} px letterboxed"
    weights = f", {cfg.pretrained} ImageNet weights" if cfg.pretrained else ", from scratch"
    data = cfg.data or "your COCO data (--data)"
    subset = f" ({cfg.train_subset:,} train images)" if cfg.train_subset else ""
    return (
        f"{cfg.detector} {cfg.backbone}{weights} on {data}{subset}, {size}; {length}, batch "
        f"{t.batch_size}, {t.optimizer} lr {t.lr:g}, amp {t.amp} (CUDA only)"
    )


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
