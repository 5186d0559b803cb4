"""`autoloss train` and `autoloss eval`: one detector training / evaluation with chosen losses.

Bad input (unknown detector, missing file, malformed JSON, a loss for the wrong branch) is one line on
stderr and exit code 2. A run that diverges or fails is a result, not a usage error: it is reported and
the command exits 1.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from autoloss.cli.common import (
    TRAIN_SECTION_SETTINGS,
    checked_task_name,
    given_settings,
    refuse_amp_on_cpu,
    task_option,
    task_settings,
    training_settings,
)
from autoloss.data_specs import is_generated

DETECTOR_CHOICE = click.Choice(["fcos", "retinanet", "faster_rcnn"])
BACKBONE_CHOICE = click.Choice(["tiny", "resnet18", "resnet50"])
DEVICE_CHOICE = click.Choice(["cpu", "cuda"])


class UserError(click.ClickException):
    """Bad input: click prints "Error: <message>" as one line on stderr; exit code 2 like usage errors."""

    exit_code = 2


def _user_error(err: Exception) -> UserError:
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(message)


def _data_options(fn: Any) -> Any:
    for option in reversed(
        [
            click.option("--detector", type=DETECTOR_CHOICE, default=None, help="Detector [default: fcos]."),
            click.option("--backbone", type=BACKBONE_CHOICE, default=None, help="Backbone [default: tiny]."),
            click.option("--data", default=None, help="Dataset name or COCO JSON [shapes]."),
            click.option("--images", type=click.Path(), default=None, help="Image folder (default: JSON's)."),
            click.option(
                "--image-size", type=int, default=None, help="Letterboxed size (128 shapes, 256 COCO)."
            ),
            click.option("--device", type=DEVICE_CHOICE, default=None, help="cpu or cuda (see --amp)."),
            click.option("--threads", type=int, default=None, help="torch threads [default: 1]."),
            click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."),
        ]
    ):
        fn = option(fn)
    return fn


@click.command()
@task_option
@click.option("--preset", default=None, help="Start from a named config (fcos-shapes, tiny).")
@_data_options
@click.option("--cls-loss", default=None, help="Named loss, 'default' or a prefix expression.")
@click.option("--reg-loss", default=None, help="Named loss, 'default' or a prefix expression.")
@click.option("--cls-weight", type=float, default=None, help="Weight of the classification loss.")
@click.option("--reg-weight", type=float, default=None, help="Weight of the regression loss.")
@click.option("--epochs", type=int, default=None, help="Train for N epochs ...")
@click.option("--iterations", type=int, default=None, help="... or N iterations [default: 700].")
@training_settings
@click.option("--time-budget", type=float, default=None, help="Stop training after this many seconds.")
@click.option("--train-size", type=int, default=None, help="shapes: training images [default: 800].")
@click.option("--val-size", type=int, default=None, help="shapes: validation images [default: 200].")
@click.option("--seed", type=int, default=None, help="Initial weights and batch order [default: 0].")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Write config, metrics, weights.")
def train(**opts: Any) -> None:
    """Train a detector with the given losses and report COCO mAP on the validation split."""
    from autoloss.detection import DatasetError, LossSpecError, resolve_loss, run_experiment
    from autoloss.detection.detectors import CLS_BRANCH
    from autoloss.detection.runner import load_experiment_data

    refuse_amp_on_cpu(opts.get("amp"), opts.get("device"))

    if opts["task_name"] not in (None, "detection"):
        return _train_task(opts)
    cfg = _train_config(opts)
    try:
        cls = resolve_loss(cfg.cls_loss, CLS_BRANCH[cfg.detector])
    except (LossSpecError, ValueError) as err:
        raise UserError(f"--cls-loss: {err}") from None
    try:
        reg = resolve_loss(cfg.reg_loss, "reg")
    except (LossSpecError, ValueError) as err:
        raise UserError(f"--reg-loss: {err}") from None
    try:
        data = load_experiment_data(cfg)
    except (DatasetError, ValueError, OSError) as err:
        raise _user_error(err) from None
    with _progress(enabled=not opts["as_json"]) as progress:
        result, detector = run_experiment(cfg, cls_loss=cls, reg_loss=reg, data=data, progress=progress)
    _finish(result, detector, opts)


def _finish(result: Any, model: Any, opts: dict[str, Any]) -> None:
    """Save (with --out) and report a training; a run that did not finish exits 1."""
    if opts["out"]:
        _save_run(Path(opts["out"]), result, model)
    _report(result.to_dict(), opts["as_json"])
    if result.status != "ok":
        click.echo(f"run {result.status}: {result.reason}", err=True)
        sys.exit(1)


def _train_task(opts: dict[str, Any]) -> None:
    """`train --task`: one trial of a user's proxy task, through the same protocol a search uses."""
    from autoloss.tasks import Schedule, TaskError, load_task

    try:
        name = checked_task_name(opts["task_name"])
    except TaskError as err:
        raise _user_error(err) from None
    settings = task_settings(opts)
    for key in ("train_size", "val_size", "cls_weight", "reg_weight"):
        if opts[key] is not None:
            settings[key] = opts[key]
    if opts["time_budget"] is not None:
        settings.setdefault("train", {})["time_budget_s"] = opts["time_budget"]
    try:
        task = load_task(name, settings)
        task.check()
        iterations, epochs = opts["iterations"], opts["epochs"]
        if iterations is None and epochs is None:
            iterations, epochs = task.default_length()
        schedule = Schedule(
            iterations=iterations,
            epochs=epochs,
            seed=opts["seed"] or 0,
            device=opts["device"] or "cpu",
            threads=opts["threads"] or 1,
        )
    except TaskError as err:
        raise _user_error(err) from None
    with _progress(enabled=not opts["as_json"]) as progress:
        result, model = task.trial(
            opts["cls_loss"] or "default", opts["reg_loss"] or "default", schedule, progress
        )
    _finish(result, model, opts)


def _train_config(opts: dict[str, Any]):
    from autoloss.detection import PROXY_PRESETS, ExperimentConfig, validate_experiment

    if opts["preset"] is not None and opts["preset"] not in PROXY_PRESETS:
        known = ", ".join(PROXY_PRESETS)
        raise UserError(f"--preset: unknown preset {opts['preset']!r}; expected one of {known}")
    if opts["epochs"] is not None and opts["iterations"] is not None:
        raise UserError("give --epochs or --iterations, not both")
    base = PROXY_PRESETS[opts["preset"]] if opts["preset"] else ExperimentConfig()
    if not base.data and not opts["data"]:
        raise UserError(f"--preset {opts['preset']} trains on your own COCO data: pass --data TRAIN.json")
    top = {
        k: opts[k]
        for k in (
            "detector",
            "backbone",
            "data",
            "images",
            "image_size",
            "train_size",
            "val_size",
            "cls_loss",
            "reg_loss",
            "cls_weight",
            "reg_weight",
            "seed",
        )
        if opts[k] is not None
    }
    shared = given_settings(opts)
    top.update({k: v for k, v in shared.items() if k not in TRAIN_SECTION_SETTINGS})
    train_keys = {"threads", "device", "epochs", "iterations"}
    train_over = {k: opts[k] for k in train_keys if opts[k] is not None}
    train_over.update({k: v for k, v in shared.items() if k in TRAIN_SECTION_SETTINGS})
    if opts["time_budget"] is not None:
        train_over["time_budget_s"] = opts["time_budget"]
    if "epochs" in train_over:
        train_over["iterations"] = None
    elif "iterations" in train_over:
        train_over["epochs"] = None
    if (
        "data" in top
        and not is_generated(top["data"])
        and "image_size" not in top
        and is_generated(base.data)
    ):
        top["image_size"] = None  # a preset's shapes size does not carry over to a real dataset
    try:
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, **train_over), **top)
        validate_experiment(cfg)
    except ValueError as err:
        raise _user_error(err) from None
    return cfg


@click.command("eval")
@click.option(
    "--weights", type=click.Path(dir_okay=False), required=True, help="weights.pt from `train --out`."
)
@_data_options
def eval_(weights: str, **opts: Any) -> None:
    """Evaluate saved weights (COCO mAP on the validation split).

    Settings not given are read from the config.yaml beside the weights, when there is one.
    """
    import yaml

    from autoloss.detection import DatasetError, ExperimentConfig, evaluate_detector, validate_experiment
    from autoloss.detection.detectors import load_weights
    from autoloss.detection.runner import build_for, load_experiment_data

    saved: dict[str, Any] = {}
    config_path = Path(weights).with_name("config.yaml")
    if config_path.exists():
        try:
            saved = yaml.safe_load(config_path.read_text()) or {}
        except yaml.YAMLError as err:
            raise _user_error(ValueError(f"{config_path}: malformed YAML ({err})")) from None
    if not Path(weights).exists():
        raise UserError(f"--weights: file not found: {weights}")

    try:
        base = ExperimentConfig.from_dict(saved) if saved else ExperimentConfig()
        top = {k: opts[k] for k in ("detector", "backbone", "data", "images", "image_size") if opts[k]}
        if "data" in top and not is_generated(top["data"]) and "image_size" not in top:
            top["image_size"] = None if is_generated(base.data) else base.image_size
        if is_generated(top.get("data", base.data)):
            top["train_size"] = 1  # evaluation reads only the validation images
        train = dataclasses.replace(
            base.train,
            device=opts["device"] or base.train.device,
            threads=opts["threads"] or base.train.threads,
        )
        # The saved weights replace the backbone's initial ones: no ImageNet download for evaluation.
        cfg = dataclasses.replace(
            base, train=train, pretrained=None, backbone_weights=None, trainable_layers=None, **top
        )
        validate_experiment(cfg)
        data = load_experiment_data(cfg)
        detector = build_for(cfg, data, None, None)
        load_weights(detector, weights)
    except (DatasetError, ValueError, OSError) as err:
        raise _user_error(err) from None
    metrics = evaluate_detector(detector, data.val, cfg.train)
    _report({"status": "ok", "metrics": metrics, "weights": weights}, opts["as_json"])


def _save_run(out: Path, result: Any, detector: Any) -> None:
    import torch
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(result.config, sort_keys=False))
    (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n")
    if detector is not None:
        torch.save(getattr(detector, "model", detector).state_dict(), out / "weights.pt")


def _report(payload: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2, allow_nan=False))
        return
    from rich.console import Console
    from rich.table import Table

    metrics = payload.get("metrics") or {}
    table = Table(title=f"COCO box mAP (val) — {payload.get('status', '')}")
    for name in metrics:
        table.add_column(name, justify="right")
    if metrics:
        table.add_row(*(f"{v:.3f}" for v in metrics.values()))
    console = Console()
    console.print(table)
    if "seconds" in payload:
        console.print(
            f"{payload['iterations']} iterations, {payload['train_seconds']:.1f} s training, "
            f"{payload['eval_seconds']:.1f} s evaluation, final loss {payload['final_loss']}",
            markup=False,
        )


class _progress:
    """A rich progress bar on stderr (only on a terminal) feeding the library's progress callback."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("training"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task("train", total=None, loss=float("nan"))

        def update(iteration: int, total: int, loss: float) -> None:
            self._bar.update(self._task, completed=iteration, total=total, loss=loss)

        return update

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(*exc)


COMMANDS = [train, eval_]
