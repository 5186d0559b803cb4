"""The detection layer: datasets, torchvision detectors with a loss seam, training, COCO mAP.

Importing this package imports torch and torchvision; the CLI imports it inside its commands. The search
trains them through `DetectionTask`, the proxy-task protocol's implementation; `run_experiment` and
`evaluate_losses` run one experiment directly.
"""

from autoloss.detection.data import DataReport, DatasetError, DataSplit, DataWarning, DetectionData
from autoloss.detection.datasets import load_dataset
from autoloss.detection.detectors import CLS_BRANCH, DETECTORS, Detector, build_detector
from autoloss.detection.loss_spec import LossSpecError, resolve_loss
from autoloss.detection.one_stage import LossFCOSHead, LossRetinaNetHead
from autoloss.detection.presets import PROXY_PRESETS, preset
from autoloss.detection.runner import (
    ExperimentConfig,
    RunResult,
    evaluate_detector,
    predict,
    validate_experiment,
)
from autoloss.detection.task import DetectionTask, detection_task, evaluate_losses, run_experiment
from autoloss.detection.train import TrainConfig, train_detector, validate_train_config

__all__ = [
    "CLS_BRANCH",
    "DETECTORS",
    "PROXY_PRESETS",
    "DataReport",
    "DataSplit",
    "DataWarning",
    "DatasetError",
    "DetectionData",
    "DetectionTask",
    "Detector",
    "ExperimentConfig",
    "LossFCOSHead",
    "LossRetinaNetHead",
    "LossSpecError",
    "RunResult",
    "TrainConfig",
    "build_detector",
    "detection_task",
    "evaluate_detector",
    "evaluate_losses",
    "load_dataset",
    "predict",
    "preset",
    "resolve_loss",
    "run_experiment",
    "train_detector",
    "validate_experiment",
    "validate_train_config",
]
