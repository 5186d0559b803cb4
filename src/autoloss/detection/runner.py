"""An experiment's parts: its config (`ExperimentConfig`, plain data), its data, its detector, and COCO mAP
of a trained detector on the validation split. `autoloss.detection.task` puts them together as a trial."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autoloss.detection.coco_eval import coco_ground_truth, coco_map, detections_to_coco
from autoloss.detection.data import RESIZE_MODES, DataSplit, Split
from autoloss.detection.datasets import load_dataset
from autoloss.detection.detectors import DETECTORS, GEOMETRY_CHOICES, Detector, build_detector
from autoloss.detection.loader import eval_loader, to_device
from autoloss.detection.train import TrainConfig, thread_limit, validate_train_config
from autoloss.tasks.protocol import RunResult

__all__ = [
    "ExperimentConfig",
    "RunResult",
    "build_for",
    "data_key",
    "evaluate_detector",
    "load_experiment_data",
    "predict",
    "validate_experiment",
]


@dataclass(frozen=True)
class ExperimentConfig:
    """What to train on what. Losses are text (a named loss, an expression or "default")."""

    detector: str = "fcos"
    backbone: str = "tiny"
    data: str = "shapes"
    images: str | None = None
    val_data: str | None = None  # a second COCO JSON for validation (COCO's train2017/val2017 layout)
    val_images: str | None = None
    train_subset: int | None = None  # this many training images drawn at random (seeded by data_seed)
    resize: str = "letterbox"  # or "keep-aspect" (min_size/max_size), see detection.data.Resize
    image_size: int | None = None
    min_size: int | None = None
    max_size: int | None = None
    cache_mb: float = 256.0  # decoded images kept per process (COCO data is read from disk)
    train_size: int = 800
    val_size: int = 200
    data_seed: int = 0
    pretrained: str | None = None  # a torchvision ImageNet weight name for the ResNet backbone
    backbone_weights: str | None = None  # or a local ResNet state dict
    trainable_layers: int | None = None
    geometry: str = "auto"  # anchors and RoI settings: "tiny", "coco" or "auto" (by image size)
    cls_loss: str = "default"
    reg_loss: str = "default"
    cls_weight: float = 1.0
    reg_weight: float | None = None
    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(iterations=700))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ExperimentConfig:
        raw = dict(raw)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown experiment setting(s): {', '.join(sorted(unknown))}")
        train = raw.pop("train", {}) or {}
        if not isinstance(train, TrainConfig):
            train_known = {f.name for f in dataclasses.fields(TrainConfig)}
            bad = set(train) - train_known
            if bad:
                raise ValueError(f"unknown train setting(s): {', '.join(sorted(bad))}")
            train = TrainConfig(**train)
        return cls(train=train, **raw)


def validate_experiment(cfg: ExperimentConfig) -> None:
    """Raise ValueError for a setting that cannot work (before any data is loaded or model built)."""
    if cfg.detector not in DETECTORS:
        raise ValueError(f"unknown detector {cfg.detector!r}; expected one of {', '.join(DETECTORS)}")
    if cfg.cls_weight < 0 or (cfg.reg_weight is not None and cfg.reg_weight < 0):
        raise ValueError("loss weights must be >= 0")
    if cfg.image_size is not None and (cfg.image_size < 32 or cfg.image_size % 32):
        raise ValueError(f"image_size must be a positive multiple of 32, got {cfg.image_size}")
    if cfg.resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {cfg.resize!r}")
    if cfg.geometry not in GEOMETRY_CHOICES:
        raise ValueError(f"geometry must be one of {', '.join(GEOMETRY_CHOICES)}, got {cfg.geometry!r}")
    if cfg.train_subset is not None and cfg.train_subset < 1:
        raise ValueError(f"train_subset must be >= 1 image, got {cfg.train_subset}")
    if cfg.pretrained is not None and cfg.backbone_weights is not None:
        raise ValueError("give pretrained (a torchvision weight name) or backbone_weights (a file), not both")
    if cfg.train.deterministic and cfg.train.device.startswith("cuda") and cfg.detector == "faster_rcnn":
        # torchvision's CUDA RoIAlign backward accumulates with atomics and asks torch to refuse it under
        # deterministic algorithms: every training would fail at its first step.
        raise ValueError(
            "--deterministic on CUDA cannot train faster_rcnn: its RoI head's RoIAlign backward "
            "(torchvision roi_align_backward_kernel) has no deterministic CUDA kernel; drop --deterministic "
            "(CPU training is deterministic without it) or use fcos / retinanet"
        )
    validate_train_config(cfg.train)


def load_experiment_data(cfg: ExperimentConfig) -> DataSplit:
    """The train/val data an experiment trains and evaluates on."""
    return load_dataset(
        cfg.data,
        cfg.images,
        cfg.image_size,
        cfg.data_seed,
        train_size=cfg.train_size,
        val_size=cfg.val_size,
        val_spec=cfg.val_data,
        val_images=cfg.val_images,
        train_subset=cfg.train_subset,
        resize=cfg.resize,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        cache_mb=cfg.cache_mb,
    )


def data_key(cfg: ExperimentConfig) -> tuple:
    """The settings that decide an experiment's data: equal keys load equal splits."""
    return (
        cfg.data,
        cfg.images,
        cfg.val_data,
        cfg.val_images,
        cfg.train_subset,
        cfg.resize,
        cfg.image_size,
        cfg.min_size,
        cfg.max_size,
        cfg.data_seed,
        cfg.train_size,
        cfg.val_size,
    )


def build_for(cfg: ExperimentConfig, data: DataSplit, cls: Any, reg: Any) -> Detector:
    """The experiment's detector for `data`, its transform sized so that it does not resize again."""
    low, high = data.train.resize.detector_sizes()
    return build_detector(
        cfg.detector,
        data.num_classes,
        cfg.backbone,
        cls,
        reg,
        cfg.cls_weight,
        cfg.reg_weight,
        seed=cfg.seed,
        min_size=low,
        max_size=high,
        pretrained=cfg.pretrained,
        backbone_weights=cfg.backbone_weights,
        trainable_layers=cfg.trainable_layers,
        geometry=cfg.geometry,
    )


@torch.no_grad()
def predict(model: torch.nn.Module, data: Split, batch_size: int = 32, device: str = "cpu", workers: int = 0):
    """Detections per image as numpy {"boxes" xyxy, "scores", "labels"} in the detector's frame."""
    model.to(device).eval()
    out: list[dict[str, np.ndarray]] = []
    for samples in eval_loader(data, batch_size, workers, device):
        images, _ = to_device(samples, device, with_targets=False)
        for det in model(images):
            out.append({k: det[k].float().cpu().numpy() for k in ("boxes", "scores", "labels")})
    return out


def evaluate_detector(model: torch.nn.Module, data: Split, cfg: TrainConfig | None = None) -> dict:
    """COCO box metrics (AP, AP50, AP75, APs, APm, APl) of `model` on `data`, in original coordinates."""
    cfg = cfg or TrainConfig(iterations=1)
    with thread_limit(cfg.threads):
        detections = predict(model, data, cfg.eval_batch_size, cfg.device, cfg.loader_workers)
    return coco_map(coco_ground_truth(data), detections_to_coco(detections, data))
