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
