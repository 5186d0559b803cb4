"""Base `nn.Module`s of the plain-PyTorch export: a generated subclass per found loss sets `loss_fn`
(the expression), `reads` (the inputs it uses) and a docstring with its formula.

Two ways to call each: from what a detector has (logits and labels, or boxes), or from the raw inputs
(`forward_raw(X=..., Q=..., ...)`) when you build those yourself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor, nn

from autoloss.export.runtime.common import (
    FOCAL_ALPHA,
    REDUCTIONS,
    alpha_t,
    reduce_loss,
    reg_inputs,
    sigmoid_cls_inputs,
    softmax_cls_inputs,
)

# --- modules ------------------------------------------------------------------------------------


class _SearchedLoss(nn.Module):
    """Shared by the generated losses: reduction, loss_weight and the raw-input call."""

    branch: ClassVar[str] = ""
    expression: ClassVar[str] = ""  # the autoloss prefix expression
    inputs: ClassVar[tuple[str, ...]] = ()  # raw inputs, in order
    reads: ClassVar[tuple[str, ...]] = ()  # the raw inputs the expression actually uses
    loss_fn: ClassVar[Callable[..., Tensor]]

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
        self.reduction = reduction
        self.loss_weight = float(loss_weight)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, loss_weight={self.loss_weight}"

    def _need_iou(self, iou: Tensor | None, name: str) -> None:
        if iou is None and name in self.reads:
            raise ValueError(
                f"this loss reads {name} (IoU of the predicted box with its ground truth): "
                "pass iou=box_iou(pred_boxes, target_boxes)"
            )

    def _reduce(
        self, values: Tensor, weight: Tensor | None, avg_factor: float | None, reduction: str | None = None
    ) -> Tensor:
        return self.loss_weight * reduce_loss(values, weight, reduction or self.reduction, avg_factor)

    def unreduced(self, **inputs: Tensor | None) -> Tensor:
        """The expression's value on raw inputs, before alpha_t, weights and reduction."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise TypeError(f"unknown inputs {', '.join(unknown)}; inputs are {', '.join(self.inputs)}")
        fn: Any = type(self).loss_fn
        return fn(*(inputs.get(n) for n in self.inputs))


class _SigmoidClsLoss(_SearchedLoss):
    """A cls-sigmoid loss (one-stage heads). Values [N, K] are multiplied by focal's alpha_t (alpha for
    positive entries, 1 - alpha for negatives) as during the search; `alpha=None` leaves them as they are."""

    inputs = ("X", "Q", "PY", "NY")

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, alpha: float | None = FOCAL_ALPHA):
        super().__init__(reduction, loss_weight)
        self.alpha = alpha

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        iou: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
    ) -> Tensor:
        """logits [N, K]; labels [N] (class index, outside [0, K) = negative) or one-hot [N, K]; iou [N]
        of each positive's predicted box (needed if the loss reads Q); weight [N] or [N, K]."""
        self._need_iou(iou, "Q")
        inputs = sigmoid_cls_inputs(logits, labels, iou)
        return self.forward_raw(**inputs, weight=weight, avg_factor=avg_factor)

    def forward_raw(
        self,
        X: Tensor,
        Q: Tensor | None = None,
        PY: Tensor | None = None,
        NY: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
    ) -> Tensor:
        values = self._alpha_weighted(self.unreduced(X=X, Q=Q, PY=PY, NY=NY), PY)
        return self._reduce(values, weight, avg_factor)

    def _alpha_weighted(self, values: Tensor, onehot: Tensor | None) -> Tensor:
        if self.alpha is None:
            return values
        if onehot is None:
            raise ValueError("alpha_t needs the one-hot targets PY; pass PY or alpha=None")
        return alpha_t(onehot, self.alpha) * values


class _SoftmaxClsLoss(_SearchedLoss):
    """A cls-softmax loss (two-stage RoI heads), one value per RoI [N]."""

    inputs = ("X", "Y", "Z")

    def __init__(self, reduction: str = "mean", loss_weight: float = 1.0, background: int = 0):
        super().__init__(reduction, loss_weight)
        self.background = background

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        iou: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
    ) -> Tensor:
        """logits [N, K+1]; labels [N] in [0, K] with `background` (0, torchvision's convention) the
        background class; iou [N] of each RoI's decoded box (needed if the loss reads Z); weight [N]."""
        self._need_iou(iou, "Z")
        inputs = softmax_cls_inputs(logits, labels, iou, self.background)
        return self.forward_raw(**inputs, weight=weight, avg_factor=avg_factor)

    def forward_raw(
        self,
        X: Tensor,
        Y: Tensor | None = None,
        Z: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
    ) -> Tensor:
        return self._reduce(self.unreduced(X=X, Y=Y, Z=Z), weight, avg_factor)


class _RegLoss(_SearchedLoss):
    """A box-regression loss on decoded xyxy pixel boxes, one value per box [N]."""

    inputs = ("I", "U", "E")

    def forward(
        self,
        pred_boxes: Tensor,
        target_boxes: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
    ) -> Tensor:
        """pred_boxes, target_boxes [N, 4] xyxy in pixels (the search's I/U/E are pixel^2); weight [N]."""
        return self.forward_raw(**reg_inputs(pred_boxes, target_boxes), weight=weight, avg_factor=avg_factor)

    def forward_raw(
        self,
        I: Tensor | None = None,
        U: Tensor | None = None,
        E: Tensor | None = None,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
    ) -> Tensor:
        return self._reduce(self.unreduced(I=I, U=U, E=E), weight, avg_factor)
