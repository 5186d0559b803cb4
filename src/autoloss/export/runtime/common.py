"""Inputs and reduction for exported losses: boxes to I/U/E, labels to one-hot, IoU to Q and Z.

The same definitions as autoloss's detector seam (`autoloss.detection.loss_inputs`), written for users who
hold logits, integer labels and xyxy boxes; a test checks the two agree.
"""

from __future__ import annotations

import torch
from torch import Tensor

# --- inputs --------------------------------------------------------------------------------------

BOX_EPS = 1e-7  # torchvision's GIoU eps, added to U and E as in the search
FOCAL_ALPHA = 0.25  # the one-stage search weighs cls-sigmoid losses by focal's alpha_t


def _float(t: Tensor) -> Tensor:
    # The losses were searched in float32: half-precision boxes would lose the pixel^2 terms.
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def box_terms(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, union and smallest-enclosing-box area [N] of paired xyxy pixel boxes [N, 4] (no eps)."""
    x1, y1, x2, y2 = pred.unbind(-1)
    x1g, y1g, x2g, y2g = target.unbind(-1)
    inter = (torch.min(x2, x2g) - torch.max(x1, x1g)).clamp(min=0) * (
        torch.min(y2, y2g) - torch.max(y1, y1g)
    ).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    enclosing = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return inter, union, enclosing


def reg_inputs(pred_boxes: Tensor, target_boxes: Tensor) -> dict[str, Tensor]:
    """The reg inputs I, U + 1e-7, E + 1e-7 [N] of predicted vs target xyxy pixel boxes [N, 4]."""
    inter, union, enclosing = box_terms(_float(pred_boxes), _float(target_boxes))
    return {"I": inter, "U": union + BOX_EPS, "E": enclosing + BOX_EPS}


def box_iou(pred_boxes: Tensor, target_boxes: Tensor) -> Tensor:
    """IoU [N] of paired xyxy boxes, detached: a target for cls losses (Q, Z), never a gradient path."""
    with torch.no_grad():
        inter, union, _ = box_terms(_float(pred_boxes), _float(target_boxes))
        return inter / (union + BOX_EPS)


def sigmoid_one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """One-hot [N, K] of class indices [N]; a label outside [0, K) (-1, or K as MMDetection writes
    background) is a negative: an all-zero row."""
    positive = (labels >= 0) & (labels < num_classes)
    onehot = torch.zeros(labels.shape[0], num_classes, device=labels.device)
    onehot[positive, labels[positive].long()] = 1.0
    return onehot


def sigmoid_cls_inputs(logits: Tensor, labels: Tensor, iou: Tensor | None = None) -> dict[str, Tensor | None]:
    """cls-sigmoid inputs from logits [N, K], labels [N] (class index; outside [0, K) = negative) or a
    one-hot [N, K], and the IoU [N] of each positive's predicted box with its ground truth (Q = one-hot * IoU;
    None when no IoU is given). Half-precision logits are computed in float32: the losses' 1e-20 guards
    underflow in float16."""
    logits = _float(logits)
    if labels.dim() == 2:
        onehot = labels.to(logits.dtype)
    else:
        onehot = sigmoid_one_hot(labels, logits.shape[1]).to(logits.dtype)
    q = None if iou is None else onehot * iou.detach()[:, None].to(logits.dtype)
    return {"X": logits, "Q": q, "PY": onehot, "NY": 1.0 - onehot}


def softmax_cls_inputs(
    logits: Tensor, labels: Tensor, iou: Tensor | None = None, background: int = 0
) -> dict[str, Tensor | None]:
    """cls-softmax inputs from logits [N, K+1], labels [N] in [0, K] (`background` is the background class:
    0 in torchvision, K in MMDetection) and the IoU [N] of each RoI's decoded box with its ground truth
    (Z = IoU for foreground RoIs, 1 for background; None when no IoU is given). Half-precision logits are
    computed in float32."""
    logits = _float(logits)
    onehot = torch.nn.functional.one_hot(labels.long(), logits.shape[1]).to(logits.dtype)
    z = None
    if iou is not None:
        fg = labels != background
        z = torch.where(fg, iou.detach().to(logits.dtype), torch.ones_like(iou, dtype=logits.dtype))
        z = z[:, None].expand_as(logits)
    return {"X": logits, "Y": onehot, "Z": z}


def alpha_t(onehot: Tensor, alpha: float = FOCAL_ALPHA) -> Tensor:
    """Focal loss's class-balance weight: alpha for positive entries, 1 - alpha for negatives."""
    return alpha * onehot + (1.0 - alpha) * (1.0 - onehot)


def class_inputs(x: Tensor, *others: Tensor | None) -> list[Tensor]:
    """Class-axis inputs broadcast to the logits' [N, C]; a per-row [N] value spreads over the classes, a
    missing one (the loss does not read it) is zero."""
    out = [x]
    for v in others:
        if v is None:
            v = x.new_zeros(())
        elif v.dim() == 1:
            v = v.unsqueeze(1)
        out.append(v.expand_as(x) if v.shape != x.shape else v)
    return out


def row_inputs(*values: Tensor | None) -> list[Tensor]:
    """Per-box inputs [N]; a missing one (the loss does not read it) is zero."""
    ref = next((v for v in values if v is not None), None)
    if ref is None:
        raise ValueError("pass at least one input tensor")
    return [ref.new_zeros(()) if v is None else v for v in values]


def fit(out: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An expression that ignores some inputs can come out smaller than one value per element: broadcast."""
    return out if tuple(out.shape) == tuple(shape) else out.expand(shape)


# --- reduction -----------------------------------------------------------------------------------

REDUCTIONS = ("none", "mean", "sum")


def _broadcasts(shape: torch.Size, to: torch.Size) -> bool:
    try:
        return tuple(torch.broadcast_shapes(shape, to)) == tuple(to)
    except RuntimeError:
        return False


def reduce_loss(
    values: Tensor, weight: Tensor | None = None, reduction: str = "mean", avg_factor: float | None = None
) -> Tensor:
    """Weight and reduce unreduced loss values (MMDetection's `weight_reduce_loss` semantics).

    `weight` multiplies each element; a per-row weight [N] on [N, K] values spreads over the classes (it is
    never averaged into a scalar). "mean" divides the sum by `avg_factor` when given (e.g. the number of
    positives), else averages over elements; "sum" sums; "none" returns the weighted values. An empty
    input gives a zero that still has a gradient path.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if weight is not None:
        weight = weight.to(values.dtype)
        if weight.shape != values.shape:
            if weight.dim() < values.dim() and weight.shape == values.shape[: weight.dim()]:
                weight = weight.reshape(*weight.shape, *([1] * (values.dim() - weight.dim())))
            elif not _broadcasts(weight.shape, values.shape):  # e.g. [N, 1] on [N, K], as MMDetection
                raise ValueError(
                    f"weight shape {tuple(weight.shape)} does not match loss shape {tuple(values.shape)}"
                )
        values = values * weight
    if reduction == "none":
        return values
    if reduction == "sum":
        if avg_factor is not None:
            raise ValueError('avg_factor can only be used with reduction="mean"')
        return values.sum()
    if avg_factor is not None:
        # Same eps as MMDetection, so avg_factor = 0 (no positives) gives 0, not NaN.
        return values.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    return values.mean() if values.numel() else values.sum()
