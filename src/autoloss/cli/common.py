"""What every command shares: the branch choice and the rule that user errors are one line, exit 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

BRANCH_NAMES = ("cls-softmax", "cls-sigmoid", "reg")
BRANCH_CHOICE = click.Choice(BRANCH_NAMES)


def fail_on_user_error(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn autoloss's user-facing errors into one clear line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from autoloss.errors import AutolossError, ExprError

        try:
            return fn(*args, **kwargs)
        except ExprError as exc:
            click.echo(f"error: {exc}", err=True)
            if exc.pointer():
                click.echo(exc.pointer(), err=True)
            sys.exit(2)
        except AutolossError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper


def training_options(default_out: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options every command that trains a batch of detectors shares: --workers, --backend, --device
    and a cached --out folder."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--workers", type=int, default=2, show_default=True),
            click.option(
                "--backend",
                type=click.Choice(["serial", "process", "ray"]),
                default="process",
                show_default=True,
            ),
            click.option("--device", default="cpu", show_default=True),
            click.option("--task", "task_name", default="detection", show_default=True, help=TASK_HELP),
            click.option(
                "--out",
                type=click.Path(file_okay=False),
                default=default_out,
                show_default=True,
                help="Output folder; finished trainings there are reused when re-run.",
            ),
        ]
        for option in reversed(options):
            fn = option(fn)
        return fn

    return decorate


# Training settings that `train` and `search` share, with the same names: (option, click kwargs).
# `search` passes them to its proxy task as settings; `train` puts them in the experiment config.
TRAINING_SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("--val-data", {"default": None, "help": "A second COCO JSON: the test split (COCO val2017)."}),
    ("--val-images", {"type": click.Path(), "default": None, "help": "Image folder of --val-data."}),
    ("--train-subset", {"type": int, "default": None, "help": "Train on N random training images (seeded)."}),
    (
        "--resize",
        {
            "type": click.Choice(["letterbox", "keep-aspect"]),
            "default": None,
            "help": "letterbox: square --image-size; keep-aspect: --min-size/--max-size, padded batches.",
        },
    ),
    ("--min-size", {"type": int, "default": None, "help": "keep-aspect: short side [800]."}),
    ("--max-size", {"type": int, "default": None, "help": "keep-aspect: long side at most [1333]."}),
    ("--batch-size", {"type": int, "default": None, "help": "Images per training step."}),
    ("--lr", {"type": float, "default": None, "help": "Peak learning rate."}),
    ("--optimizer", {"type": click.Choice(["sgd", "adamw"]), "default": None}),
    (
        "--amp",
        {
            "type": click.Choice(["off", "bf16", "fp16"]),
            "default": None,
            "help": "Mixed precision on CUDA; every loss is computed in float32 [off].",
        },
    ),
    (
        "--deterministic",
        {"is_flag": True, "default": None, "help": "Deterministic kernels (cuDNN too); slower on GPU."},
    ),
    ("--loader-workers", {"type": int, "default": None, "help": "Processes decoding images [0]."}),
    (
        "--compile-loss",
        {
            "is_flag": True,
            "default": None,
            "help": "torch.compile the searched losses; pays only for long trainings.",
        },
    ),
    (
        "--pretrained",
        {"default": None, "help": "torchvision ImageNet weights for resnet18/50: DEFAULT, IMAGENET1K_V1."},
    ),
    (
        "--backbone-weights",
        {"type": click.Path(dir_okay=False), "default": None, "help": "A local ResNet state dict (.pth)."},
    ),
    (
        "--trainable-layers",
        {"type": int, "default": None, "help": "Trainable ResNet stages (pretrained) [3]."},
    ),
]
TRAIN_SECTION_SETTINGS = (
    "batch_size",
    "lr",
    "optimizer",
    "amp",
    "deterministic",
    "loader_workers",
    "compile_loss",
)


def setting_name(option: str) -> str:
    return option.lstrip("-").replace("-", "_")


def training_settings(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared training settings (see TRAINING_SETTINGS) as options."""
    for option, kwargs in reversed(TRAINING_SETTINGS):
        fn = click.option(option, **kwargs)(fn)
    return fn


def shared_task_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--preset, --backbone and the training settings, for the commands that train given tasks (fidelity,
    transfer) with the same options `search` takes; `task_settings` turns them into task settings."""
    fn = training_settings(fn)
    fn = click.option(
        "--backbone", type=click.Choice(["tiny", "resnet18", "resnet50"]), default="tiny", show_default=True
    )(fn)
    return click.option("--preset", default=None, help="The training to start from (autoloss presets).")(fn)


def given_settings(opts: dict[str, Any]) -> dict[str, Any]:
    """The shared training settings the user gave (a flag left off is None, not False)."""
    names = (setting_name(option) for option, _ in TRAINING_SETTINGS)
    return {n: opts[n] for n in names if opts.get(n) not in (None, False)}


TASK_HELP = (
    "The proxy task: 'detection' (torchvision's detectors) or your own, as module:function or "
    'path/to/file.py:function returning an autoloss.tasks.ProxyTask (README: "Your own detector").'
)


def checked_task_name(name: str) -> str:
    """`name` as workers will load it (a file path made absolute), its factory found (TaskError if not)."""
    from autoloss.tasks import canonical_name, task_factory

    name = canonical_name(name)
    task_factory(name)
    return name


def task_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--task, shared by every command that trains."""
    return click.option("--task", "task_name", default=None, help=TASK_HELP)(fn)


# Flags that are settings of the detection task (and of tasks built on it), named as its settings.
TASK_FLAGS = ("preset", "detector", "backbone", "data", "images", "image_size")


def refuse_amp_on_cpu(amp: str | None, device: str | None) -> None:
    """An explicit `--amp bf16` / `fp16` without CUDA is refused: autocast runs only on CUDA here, and on a
    CPU without bf16 instructions it would be slower anyway. A preset's own bf16 preference (the COCO
    presets) is not refused: it applies where there is CUDA and is ignored elsewhere."""
    if amp in ("bf16", "fp16") and not (device or "cpu").startswith("cuda"):
        raise click.UsageError(
            f"--amp needs --device cuda: mixed precision runs only on CUDA (got --amp {amp} on "
            f"{device or 'cpu'}); leave --amp off on CPU"
        )


def task_settings(opts: dict[str, Any]) -> dict[str, Any]:
    """The task settings the user gave as flags: top-level ones, and training ones under "train"."""
    settings = {k: opts[k] for k in TASK_FLAGS if opts.get(k) is not None}
    for name, value in given_settings(opts).items():
        if name in TRAIN_SECTION_SETTINGS:
            settings.setdefault("train", {})[name] = value
        else:
            settings[name] = value
    return settings
