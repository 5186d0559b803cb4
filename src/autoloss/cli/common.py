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
