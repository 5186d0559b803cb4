"""The one place where a detector head's tensors become a searched loss's inputs, and its output a number.

Shared by the FCOS, RetinaNet and Faster R-CNN seams so the three build I/U/E, IoU targets and reductions
identically:

- reg: I, U + 1e-7, E + 1e-7 of decoded xyxy pixel boxes, pred vs target (torchvision's GIoU eps);
- cls-sigmoid: X [N,K], Q (IoU of the positive's decoded box at its GT class, else 0), PY, NY;
- cls-softmax: X [N,K+1], one-hot Y, Z (IoU for foreground RoIs, 1 for background) over the class axis.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# BOX_EPS is torchvision's generalized_box_iou_loss eps; U and E carry it so the named GIoU equals the
# stock loss.
from autoloss.spaces.boxes import BOX_EPS, box_terms
from autoloss.spaces.branches import FOCAL_ALPHA


class LossOutputError(ValueError):
    """A searched loss returned something that cannot be reduced to one value per element/box."""


def reg_inputs(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """The reg branch's inputs for decoded boxes `pred` vs `target` (xyxy pixels, [N,4])."""
    inter, union, enclosing = box_terms(pred.float(), target.float())
    return {"I": inter, "U": union + BOX_EPS, "E": enclosing + BOX_EPS}


def paired_iou(pred: Tensor, target: Tensor) -> Tensor:
    """IoU of paired boxes, detached: a target for cls losses, never a path for their gradient."""
    with torch.no_grad():
        inter, union, _ = box_terms(pred.float(), target.float())
        return inter / (union + BOX_EPS)


def sigmoid_cls_inputs(logits: Tensor, onehot: Tensor, iou: Tensor) -> dict[str, Tensor]:
    """cls-sigmoid inputs from logits [N,K], one-hot targets [N,K] and per-row IoU [N] (0 for negatives)."""
    onehot = onehot.to(logits.dtype)
    return {"X": logits, "Q": onehot * iou[:, None].to(logits.dtype), "PY": onehot, "NY": 1.0 - onehot}


def softmax_cls_inputs(logits: Tensor, labels: Tensor, fg_iou: Tensor) -> dict[str, Tensor]:
    """cls-softmax inputs from logits [N,K+1], labels [N] (0 = background) and IoU [N] (used where fg)."""
    onehot = torch.nn.functional.one_hot(labels, logits.shape[1]).to(logits.dtype)
    z = torch.where(labels > 0, fg_iou.to(logits.dtype), torch.ones_like(fg_iou, dtype=logits.dtype))
    return {"X": logits, "Y": onehot, "Z": z[:, None].expand_as(logits)}


def alpha_t(onehot: Tensor, alpha: float = FOCAL_ALPHA) -> Tensor:
    """Focal loss's class-balance weight: alpha for positive entries, 1 - alpha for negatives."""
    return alpha * onehot + (1.0 - alpha) * (1.0 - onehot)


def apply_loss(loss: Any, inputs: dict[str, Tensor], shape: tuple[int, ...]) -> Tensor:
    """Call a Loss-like `loss(**inputs)` and return its unreduced value as float32 of `shape`.

    A constant or row-constant result is broadcast (the search can produce expressions that ignore an
    input); anything else that does not fit raises `LossOutputError`.
    """
    out = loss(**inputs)
    if not isinstance(out, Tensor):
        out = torch.as_tensor(out, dtype=torch.float32, device=next(iter(inputs.values())).device)
    if tuple(out.shape) != shape:
        try:
            out = out.expand(shape)
        except RuntimeError:
            text = getattr(loss, "text", repr(loss))
            raise LossOutputError(
                f"loss {text} returned shape {tuple(out.shape)}, expected {shape}"
            ) from None
    return out.float()


def zero_with_grad(like: Tensor) -> Tensor:
    """A zero loss that still has a gradient path to `like` (a batch without foreground must backprop)."""
    return like[:0].float().sum()


def weighted_sum(values: Tensor, weight: Tensor | None = None) -> Tensor:
    """Sum of per-box (or per-element) values; a per-box `weight` multiplies each box's own value.

    The weight is never averaged over the last axis (a defect of the public reference's reg wrapper,
    which collapses one-stage IoU weights into a scalar).
    """
    if weight is not None:
        if weight.shape != values.shape[: weight.dim()]:
            raise LossOutputError(f"weight shape {tuple(weight.shape)} does not match {tuple(values.shape)}")
        values = values * weight.reshape(*weight.shape, *([1] * (values.dim() - weight.dim())))
    return values.sum()
