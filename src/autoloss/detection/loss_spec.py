"""What a detector accepts as a loss: None/"default" (torchvision's stock loss), a Loss-like object, or text.

A Loss-like object has `.branch` ("cls-softmax", "cls-sigmoid" or "reg"), `.text`, and is called with the
branch's inputs as keywords, returning an unreduced tensor. Text is a named loss or a prefix expression,
resolved through `autoloss.loss.Loss` (imported lazily: the detection layer only relies on the protocol).
"""

from __future__ import annotations

from typing import Any, Protocol

from autoloss.errors import AutolossError

BRANCHES = ("cls-softmax", "cls-sigmoid", "reg")


class LossLike(Protocol):
    branch: str
    text: str

    def __call__(self, **inputs: Any) -> Any: ...


class LossSpecError(AutolossError, ValueError):
    """A loss that cannot be used where it was given (unknown name, bad expression, wrong branch)."""


def resolve_loss(spec: Any, branch: str) -> LossLike | None:
    """Return None for the stock loss, else a Loss-like object for `branch` (raises `LossSpecError`)."""
    if branch not in BRANCHES:
        raise ValueError(f"unknown branch {branch!r}; expected one of {BRANCHES}")
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "default")):
        return None
    if isinstance(spec, str):
        spec = _from_text(spec.strip(), branch)
    if not callable(spec) or not hasattr(spec, "branch"):
        raise LossSpecError(f"not a loss: {spec!r} (needs .branch and to be callable)")
    if spec.branch != branch:
        text = getattr(spec, "text", repr(spec))
        raise LossSpecError(f"loss {text!r} is for branch {spec.branch}, but this head needs {branch}")
    return spec


def loss_text(loss: Any) -> str:
    """How a resolved loss is recorded in configs and results."""
    return "default" if loss is None else str(getattr(loss, "text", repr(loss)))


def _from_text(text: str, branch: str) -> Any:
    from autoloss.loss import Loss  # lazy: the expression layer is only needed for text specs

    try:
        return Loss.resolve(text, branch)
    except ValueError as err:  # ExprError: unknown name, malformed text, wrong branch
        raise LossSpecError(f"cannot use {text!r} as a {branch} loss: {err}") from None
