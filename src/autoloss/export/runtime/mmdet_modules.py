"""Base classes of the MMDetection 3.x export: the plain-PyTorch modules with MMDetection's loss call
`forward(pred, target, weight=None, avg_factor=None, reduction_override=None)` and label conventions
(background = num_classes). Registered in `MODELS` when MMDetection is installed; without it the file still
imports and the classes work as ordinary torch modules.

A loss that reads Q (cls-sigmoid) or Z (cls-softmax) needs each sample's IoU, which stock MMDetection heads
do not give their classification loss: pass `target=(labels, iou)`, as GFL's head does for its
QualityFocalLoss.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from autoloss.export.runtime.common import FOCAL_ALPHA, reg_inputs, sigmoid_cls_inputs, softmax_cls_inputs
from autoloss.export.runtime.torch_modules import _RegLoss, _SigmoidClsLoss, _SoftmaxClsLoss

# --- MMDetection --------------------------------------------------------------------------------

try:
    from mmdet.registry import MODELS
except ImportError:  # MMDetection is not installed: a registry that registers nothing

    class _NoRegistry:
        def register_module(self, name: Any = None, force: bool = False, module: Any = None) -> Any:
            if module is not None:
                return module
            return lambda cls: cls

    MODELS = _NoRegistry()


def _split_target(target: Any) -> tuple[Tensor, Tensor | None]:
    """`labels` or `(labels, iou)` (the QualityFocalLoss convention) -> (labels, iou or None)."""
    if isinstance(target, (tuple, list)):
        if len(target) != 2:
            raise ValueError("target must be labels [N] or (labels [N], iou [N])")
        return target[0], target[1]
    return target, None


def _reduction(module: Any, override: str | None) -> str:
    if override not in (None, "none", "mean", "sum"):
        raise ValueError(f"reduction_override must be None, 'none', 'mean' or 'sum', got {override!r}")
    return override or module.reduction


class _MMDetSigmoidClsLoss(_SigmoidClsLoss):
    """cls-sigmoid loss for one-stage heads (FCOS, ATSS, RetinaNet): pred [N, K] logits, target labels [N]
    with K = background (or `(labels, iou)`); values times focal's alpha_t, as in the search."""

    def __init__(
        self,
        use_sigmoid: bool = True,
        alpha: float | None = FOCAL_ALPHA,
        reduction: str = "mean",
        loss_weight: float = 1.0,
        gamma: float | None = None,
        activated: bool = False,
    ):
        if not use_sigmoid:
            raise ValueError("a cls-sigmoid loss needs use_sigmoid=True")
        if gamma is not None:
            raise ValueError(
                f"{type(self).__name__} has no gamma (got gamma={gamma!r}): its focusing is part of the "
                "searched expression. Drop gamma from loss_cls; a config that inherits FocalLoss's keys "
                "from _base_ needs _delete_=True in loss_cls."
            )
        if activated:
            raise ValueError(
                f"{type(self).__name__} takes logits: activated=True (probabilities) is not supported"
            )
        super().__init__(reduction, loss_weight, alpha)
        self.use_sigmoid = True

    def forward(  # type: ignore[override]
        self,
        pred: Tensor,
        target: Any,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        labels, iou = _split_target(target)
        self._need_iou(iou, "Q")
        if weight is not None and weight.dim() == 1 and weight.numel() != pred.shape[0]:
            if weight.numel() != pred.numel():
                raise ValueError(
                    f"weight shape {tuple(weight.shape)} does not match pred {tuple(pred.shape)}"
                )
            weight = weight.view(pred.shape[0], -1)  # per element, flattened (FSAF), as MMDetection reads it
        inputs = sigmoid_cls_inputs(pred, labels, iou)
        values = self._alpha_weighted(self.unreduced(**inputs), inputs["PY"])
        return self._reduce(values, weight, avg_factor, _reduction(self, reduction_override))


class _MMDetSoftmaxClsLoss(_SoftmaxClsLoss):
    """cls-softmax loss for two-stage RoI heads: pred [N, K+1] logits, target labels [N] with K =
    background (or `(labels, iou)`), one value per RoI."""

    def __init__(self, use_sigmoid: bool = False, reduction: str = "mean", loss_weight: float = 1.0):
        if use_sigmoid:
            raise ValueError("a cls-softmax loss needs use_sigmoid=False")
        super().__init__(reduction, loss_weight)
        self.use_sigmoid = False

    def forward(  # type: ignore[override]
        self,
        pred: Tensor,
        target: Any,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        labels, iou = _split_target(target)
        self._need_iou(iou, "Z")
        values = self.unreduced(**softmax_cls_inputs(pred, labels, iou, background=pred.shape[1] - 1))
        return self._reduce(values, weight, avg_factor, _reduction(self, reduction_override))


class _MMDetRegLoss(_RegLoss):
    """Box-regression loss on decoded xyxy boxes (two-stage heads need `reg_decoded_bbox=True`)."""

    def forward(  # type: ignore[override]
        self,
        pred: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        avg_factor: float | None = None,
        reduction_override: str | None = None,
    ) -> Tensor:
        reduction = _reduction(self, reduction_override)
        if weight is not None and not torch.any(weight > 0) and reduction != "none":
            # MMDetection's convention: nothing to learn gives a zero that keeps the graph connected
            # (IoULoss's: with reduction "none" the zero values keep their shape [N]).
            return (pred * (weight.unsqueeze(-1) if weight.dim() == pred.dim() - 1 else weight)).sum()
        if weight is not None and weight.dim() > 1:
            # [N, 4] per-coordinate weights -> one per box; a per-box [N] weight is never averaged.
            weight = weight.mean(-1)
        values = self.unreduced(**reg_inputs(pred, target))
        return self._reduce(values, weight, avg_factor, reduction)
