"""`DetectionTask`: the proxy-task protocol for torchvision's FCOS, RetinaNet and Faster R-CNN.

Its typed config is an `ExperimentConfig` without what a trial or the caller's schedule decides (the
losses, the seed, the length, the device and threads). Settings start from a preset (`autoloss presets`)
and any `ExperimentConfig` field overrides it, `train` settings one by one; `config()` writes them all out
with the preset's name, so a run directory says exactly what was trained.

A user's detector is a subclass that overrides `build_model` (see the README, "Your own detector"): the
data, the training loop, evaluation and the loss seam's inputs stay the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from autoloss.data_specs import annotation_file, data_names, is_generated, is_known_data
from autoloss.detection.compiled_loss import compile_losses
from autoloss.detection.data import DataSplit
from autoloss.detection.detectors import CLS_BRANCH, Detector, _fork_and_seed
from autoloss.detection.loss_spec import loss_text, resolve_loss
from autoloss.detection.presets import PROXY_PRESETS, preset
from autoloss.detection.runner import (
    ExperimentConfig,
    build_for,
    evaluate_detector,
    load_experiment_data,
    validate_experiment,
)
from autoloss.detection.train import TrainConfig, train_detector
from autoloss.tasks.protocol import ProgressFn, ProxyTask, RunResult, Schedule, TaskError, TrainReport

DEFAULT_PRESET = "fcos-shapes"
# What a trial and its schedule decide: never part of the task's settings.
TRIAL_FIELDS = ("cls_loss", "reg_loss", "seed")
SCHEDULE_FIELDS = ("iterations", "epochs", "device", "threads")


class DetectionTask(ProxyTask):
    """A torchvision detector (`experiment.detector`) trained and scored (COCO AP) on a dataset."""

    def __init__(
        self, experiment: ExperimentConfig, preset_name: str | None = None, data: DataSplit | None = None
    ):
        self.experiment = experiment
        self.preset_name = preset_name
        self._data = data  # loaded on the first build, then kept: a worker trains many proxies on it

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> DetectionTask:
        """The preset `settings["preset"]` (default fcos-shapes) with the other settings replacing its own."""
        settings = dict(settings)
        name = settings.pop("preset", None) or DEFAULT_PRESET
        if name not in PROXY_PRESETS:
            raise TaskError(
                f"unknown preset {name!r}; presets: {', '.join(PROXY_PRESETS)} (autoloss presets)"
            )
        known = {f.name for f in dataclasses.fields(ExperimentConfig)} - set(TRIAL_FIELDS)
        unknown = set(settings) - known
        if unknown:
            raise TaskError(
                f"unknown detection task setting(s): {', '.join(sorted(unknown))}; known: preset, "
                f"{', '.join(sorted(known))}"
            )
        train = dict(settings.pop("train", None) or {})
        train_known = {f.name for f in dataclasses.fields(TrainConfig)} - set(SCHEDULE_FIELDS)
        bad = set(train) - train_known
        if bad:
            raise TaskError(
                f"unknown train setting(s): {', '.join(sorted(bad))}; known: {', '.join(sorted(train_known))}"
            )
        base = PROXY_PRESETS[name]
        if "data" in settings and not is_generated(settings["data"] or "") and is_generated(base.data):
            settings.setdefault("image_size", None)  # the dataset's own default: photos need more than 128 px
        try:
            experiment = preset(name, train=train, **settings)
        except TypeError as err:
            raise TaskError(f"detection task settings: {err}") from None
        return cls(experiment, name)

    @property
    def cls_branch(self) -> str:
        if self.experiment.detector not in CLS_BRANCH:
            raise TaskError(
                f"unknown detector {self.experiment.detector!r}; detectors: {', '.join(CLS_BRANCH)}"
            )
        return CLS_BRANCH[self.experiment.detector]

    def config(self) -> dict[str, Any]:
        raw = self.experiment.to_dict()
        for name in TRIAL_FIELDS:
            raw.pop(name)
        raw["train"] = {k: v for k, v in raw["train"].items() if k not in SCHEDULE_FIELDS}
        return {"preset": self.preset_name or DEFAULT_PRESET, **raw}

    def default_length(self) -> tuple[int | None, int | None]:
        return self.experiment.train.iterations, self.experiment.train.epochs

    def input_files(self) -> list[str]:
        e = self.experiment
        named = [
            annotation_file(e.data) if not is_generated(e.data) else None,
            e.val_data,
            e.backbone_weights,
        ]
        return [str(f) for f in named if f]

    def check(self) -> None:
        e = self.experiment
        self.cls_branch  # noqa: B018 -- raises for an unknown detector
        preset_data = PROXY_PRESETS[self.preset_name].data if self.preset_name else "shapes"
        if not is_generated(preset_data) and (not e.data or is_generated(e.data)):
            raise TaskError(
                f"preset {self.preset_name!r} trains on your own COCO data: pass --data TRAIN.json "
                "(and --val-data VAL.json with --images / --val-images for COCO's two-file layout)"
            )
        if not is_known_data(e.data):
            raise TaskError(
                f"--data must be a dataset name ({data_names()}; autoloss data list) or a COCO "
                f"annotations JSON; {e.data!r} is neither"
            )
        if e.val_data is not None and not Path(e.val_data).is_file():
            raise TaskError(f"--val-data: {e.val_data!r} does not exist")
        for flag, folder in (("--images", e.images), ("--val-images", e.val_images)):
            if folder is not None and not Path(folder).is_dir():
                raise TaskError(f"{flag}: image folder {folder!r} does not exist")
        if e.backbone_weights is not None and not Path(e.backbone_weights).is_file():
            raise TaskError(f"--backbone-weights: file {e.backbone_weights!r} does not exist")
        try:
            # Any length will do: the schedule is the caller's.
            validate_experiment(
                dataclasses.replace(e, train=dataclasses.replace(e.train, iterations=1, epochs=None))
            )
        except ValueError as err:
            raise TaskError(str(err)) from None

    def describe_data(self) -> dict[str, Any]:
        return {"data": self.experiment.data, **self.data().describe()}

    def data(self) -> DataSplit:
        if self._data is None:
            self._data = load_experiment_data(self.experiment)
        return self._data

    def trial_config(
        self, schedule: Schedule, cls_loss: Any = "default", reg_loss: Any = "default"
    ) -> ExperimentConfig:
        """The ExperimentConfig of one trial: the task's settings with the schedule and losses filled in."""
        train = dataclasses.replace(
            self.experiment.train,
            iterations=schedule.iterations,
            epochs=schedule.epochs,
            device=schedule.device,
            threads=schedule.threads,
        )
        return dataclasses.replace(
            self.experiment, train=train, seed=schedule.seed, cls_loss=cls_loss, reg_loss=reg_loss
        )

    def record(self, cls_loss: Any, reg_loss: Any, schedule: Schedule) -> dict[str, Any]:
        return self.trial_config(
            schedule, loss_text(_resolved(cls_loss, self.cls_branch)), loss_text(_resolved(reg_loss, "reg"))
        ).to_dict()

    def build(self, cls_loss: Any, reg_loss: Any, seed: int) -> Detector:
        cls, reg = compile_losses(
            resolve_loss(cls_loss, self.cls_branch),
            resolve_loss(reg_loss, "reg"),
            self.experiment.train.compile_loss,
        )
        data = self.data()
        if type(self).build_model is DetectionTask.build_model:
            return build_for(dataclasses.replace(self.experiment, seed=seed), data, cls, reg)
        low, high = data.train.resize.detector_sizes()
        with _fork_and_seed(seed):
            model = self.build_model(data.num_classes, cls, reg, low, high)
        if isinstance(model, Detector):
            return model
        if not isinstance(model, nn.Module):
            raise TaskError(
                f"{type(self).__name__}.build_model returned {type(model).__name__}, not a torch module"
            )
        return Detector(model, self.experiment.detector, type(self).__name__, data.num_classes)

    def build_model(
        self, num_classes: int, cls_loss: Any, reg_loss: Any, min_size: int, max_size: int
    ) -> nn.Module:
        """The detector to train, for `num_classes` foreground classes, with the searched losses in its heads
        (`cls_loss` / `reg_loss` are resolved losses, None for the detector's own: pass them to
        `LossFCOSHead`, `LossRetinaNetHead` or `LossRoIHeads`). `min_size`/`max_size` are the sizes its
        transform must keep so that it does not resize the loaded images again. Weights are seeded by the
        caller. Subclasses override this to search losses for another detector; a torchvision one-stage
        model takes labels 0..K-1 (`experiment.detector` says which kind it is)."""
        raise NotImplementedError  # the built-in detectors are built by `build`

    def train(self, model: Any, schedule: Schedule, progress: ProgressFn | None = None) -> TrainReport:
        return train_detector(
            model, self.data().train, self.trial_config(schedule).train, schedule.seed, progress
        )

    def evaluate(self, model: Any, schedule: Schedule) -> dict[str, float]:
        return evaluate_detector(model, self.data().split(schedule.split), self.trial_config(schedule).train)


def _resolved(loss: Any, branch: str) -> Any:
    try:
        return resolve_loss(loss, branch)
    except Exception:  # recorded as given; `build` reports why it cannot be used
        return loss if isinstance(loss, str) else None


def detection_task(settings: Mapping[str, Any]) -> DetectionTask:
    """The built-in task's factory (`--task detection`, the default)."""
    return DetectionTask.from_settings(settings)


def schedule_of(cfg: ExperimentConfig) -> Schedule:
    """An experiment's own schedule (its train length, seed, device and threads)."""
    t = cfg.train
    return Schedule(
        iterations=t.iterations, epochs=t.epochs, seed=cfg.seed, device=t.device, threads=t.threads
    )


def run_experiment(
    cfg: ExperimentConfig,
    *,
    cls_loss: Any = None,
    reg_loss: Any = None,
    data: DataSplit | None = None,
    progress: ProgressFn | None = None,
) -> tuple[RunResult, Detector | None]:
    """Train and evaluate one experiment; `cls_loss`/`reg_loss` objects override the config's loss text.

    Returns the result and the trained detector (None if it could not be built). Config errors raise
    ValueError before any work; what happens during training or evaluation becomes the result's status.
    """
    validate_experiment(cfg)
    task = DetectionTask(cfg, data=data)
    cls = cls_loss if cls_loss is not None else cfg.cls_loss
    reg = reg_loss if reg_loss is not None else cfg.reg_loss
    return task.trial(cls, reg, schedule_of(cfg), progress)


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
