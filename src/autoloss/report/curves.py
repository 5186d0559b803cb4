"""Loss curves: a loss's value and gradient along one-dimensional families of inputs, as numbers.

A loss is judged by what it does to a detector's outputs, so the curves are computed through the seam's own
code: the inputs are built by `autoloss.detection.loss_inputs` (I/U/E with torchvision's eps, Q and Z as
IoU targets), the loss is called with `apply_loss` — the compiled function `Loss.fn` the detector trains
with — in float32, a cls-sigmoid loss is weighted by focal's alpha_t as the one-stage heads weigh it, and the
gradients come from torch.autograd. Drawing them is `autoloss.report.curve_plots`.

- cls-sigmoid: against the predicted probability sigmoid(x), for a positive at IoU targets Q and for a
  negative; the gradient is d loss / d x (the logit).
- cls-softmax: against the true class's probability, K classes plus background with the other logits
  equal, at IoU targets Z; the gradient is d loss / d x_y (the true class's logit).
- reg: the target is a 64 x 64 px box; a shifted box and a smaller centred box (against IoU), and a box
  moving away once the boxes stop overlapping (against the centre distance), where GIoU's enclosing-box term
  still pulls while IoU's gradient is zero. The gradient is its component along the family's direction,
  d loss / d t for the family's parameter t in pixels (offset, side length, centre distance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from autoloss.errors import AutolossError

POINTS = 201
QUALITIES = (1.0, 0.5)  # IoU targets: Q of a positive (cls-sigmoid), Z of a foreground RoI (cls-softmax)
CLASSES = 80  # COCO's: the softmax curves are drawn for 80 classes plus background
BOX = 64.0  # the target box's side, px
PROB_RANGE = (1e-3, 1 - 1e-3)  # the probability axis; beyond it the logit is past +-6.9
IOU_RANGE = (0.01, 0.99)
APART_RANGE = (0.75, 4.0)  # centre distance in target sides: from overlapping to far apart

NOTES = {
    "cls-sigmoid": "every loss × focal's α_t (0.25 on positives, 0.75 on negatives), as the one-stage "
    "heads apply it; one element per location and class; Q: the IoU target of a positive",
    "cls-softmax": "{classes} classes + background ({logits} logits), the other {others} logits equal; "
    "Z: the RoI's IoU target (1 for background RoIs)",
    "reg": "target box {box:g} × {box:g} px fixed; gradient: its component along the family's direction, "
    "per px of the family's parameter; I, U, E as the heads build them (U, E + 1e-7)",
}


class CurveError(AutolossError, ValueError):
    """Losses that cannot be drawn together (different branches), an unknown comparison, a bad file."""


@dataclass(frozen=True)
class Case:
    """One family of inputs: the x values and, per loss label, the loss and its gradient there."""

    title: str
    xlabel: str
    grad_label: str
    x: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    marks: tuple[float, ...] = ()  # x positions worth a line: where the boxes stop overlapping


@dataclass(frozen=True)
class BranchCurves:
    branch: str
    cases: tuple[Case, ...]
    note: str


def loss_curves(
    losses: Mapping[str, Any],
    *,
    points: int = POINTS,
    qualities: Sequence[float] = QUALITIES,
    classes: int = CLASSES,
    box: float = BOX,
) -> BranchCurves:
    """The curves of `losses` (label -> Loss-like: `.branch`, called with the branch's inputs), which must
    share one branch. `qualities` are the IoU targets Q (cls-sigmoid positives) or Z (cls-softmax)."""
    branches = sorted({loss.branch for loss in losses.values()})
    if len(branches) != 1:
        which = ", ".join(f"{label} ({loss.branch})" for label, loss in losses.items())
        raise CurveError(
            f"loss curves are drawn for one branch at a time; got {which or 'no losses'}"
            if branches
            else "no losses to draw"
        )
    if points < 2:
        raise CurveError(f"a curve needs at least 2 points, got {points}")
    if any(not 0.0 <= q <= 1.0 for q in qualities) or (branches == ["cls-softmax"] and not qualities):
        raise CurveError(f"IoU targets are between 0 and 1, and cls-softmax needs one; got {list(qualities)}")
    branch = branches[0]
    if branch == "cls-sigmoid":
        return sigmoid_curves(losses, points=points, qualities=qualities)
    if branch == "cls-softmax":
        return softmax_curves(losses, points=points, qualities=qualities, classes=classes)
    return reg_curves(losses, points=points, box=box)


# --- classification ---------------------------------------------------------------------------------


def probability_logits(points: int) -> Tensor:
    """Logits (float32) whose sigmoids are evenly spaced in `PROB_RANGE`: the axis people read is p."""
    p = np.linspace(*PROB_RANGE, points)
    return torch.tensor(np.log(p) - np.log1p(-p), dtype=torch.float32)


def sigmoid_curves(
    losses: Mapping[str, Any], *, points: int = POINTS, qualities: Sequence[float] = QUALITIES
) -> BranchCurves:
    from autoloss.detection.loss_inputs import alpha_t, apply_loss, sigmoid_cls_inputs

    logits = probability_logits(points)
    x = torch.sigmoid(logits)
    cases = []
    for positive, q in [*((True, q) for q in qualities), (False, 0.0)]:
        onehot = torch.full((points, 1), float(positive))
        iou = torch.full((points,), float(q))

        def seam(loss: Any, leaf: Tensor, onehot: Tensor = onehot, iou: Tensor = iou) -> Tensor:
            # the one-stage heads' `_sigmoid_cls`: alpha_t times the unreduced loss, per element
            values = apply_loss(loss, sigmoid_cls_inputs(leaf, onehot, iou), tuple(leaf.shape))
            return (alpha_t(onehot) * values).reshape(-1)

        case = Case(
            title=f"positive, Q = {q:g}" if positive else "negative",
            xlabel="predicted probability σ(x)",
            grad_label="∂ loss / ∂ x  (x: the logit)",
            x=_numpy(x),
        )
        for label, loss in losses.items():
            _fill(case, label, loss, seam, logits.reshape(-1, 1), lambda g: g.reshape(-1))
        cases.append(case)
    return BranchCurves("cls-sigmoid", tuple(cases), NOTES["cls-sigmoid"])


def softmax_curves(
    losses: Mapping[str, Any],
    *,
    points: int = POINTS,
    qualities: Sequence[float] = QUALITIES,
    classes: int = CLASSES,
) -> BranchCurves:
    from autoloss.detection.loss_inputs import apply_loss, softmax_cls_inputs

    if classes < 1:
        raise CurveError(f"the softmax curves need at least one class, got {classes}")
    # p_y = e^t / (e^t + K e^0): the true logit t that puts the true class at each probability
    p = np.linspace(*PROB_RANGE, points)
    true_logit = torch.tensor(np.log(p * classes) - np.log1p(-p), dtype=torch.float32)
    labels = torch.ones(points, dtype=torch.long)  # class 1: column 0 is the background, as in the RoI head
    cases = []
    for z in qualities:
        iou = torch.full((points,), float(z))

        def seam(loss: Any, leaf: Tensor, iou: Tensor = iou) -> Tensor:
            inputs = softmax_cls_inputs(_softmax_logits(leaf, classes), labels, iou)
            return apply_loss(loss, inputs, (points,))

        case = Case(
            title=f"true class, Z = {z:g}",
            xlabel="true class probability p_y",
            grad_label="∂ loss / ∂ x_y  (x_y: the true class's logit)",
            x=_numpy(torch.softmax(_softmax_logits(true_logit, classes), dim=1)[:, 1]),
        )
        for label, loss in losses.items():
            _fill(case, label, loss, seam, true_logit, lambda g: g)
        cases.append(case)
    note = NOTES["cls-softmax"].format(classes=classes, logits=classes + 1, others=classes)
    return BranchCurves("cls-softmax", tuple(cases), note)


def _softmax_logits(true_logit: Tensor, classes: int) -> Tensor:
    """[N, classes + 1] logits: background (column 0) and every other class at 0, class 1 at `true_logit`."""
    n = true_logit.shape[0]
    return torch.cat([torch.zeros(n, 1), true_logit[:, None], torch.zeros(n, classes - 1)], dim=1)


# --- regression -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxFamily:
    """Predicted boxes `pred(t)` against the target (0, 0, box, box); `direction` is d pred / d t."""

    title: str
    xlabel: str
    grad_label: str
    params: np.ndarray  # t, px
    pred: Callable[[Tensor], Tensor]
    direction: tuple[float, float, float, float]
    x_is_iou: bool  # True: the x-axis is the IoU; False: it is t itself (the centre distance)


def box_families(points: int, box: float = BOX) -> list[BoxFamily]:
    iou = np.linspace(*IOU_RANGE, points)
    zero = torch.zeros(())

    def shifted(t: Tensor) -> Tensor:
        return torch.stack([t, zero.expand_as(t), t + box, zero.expand_as(t) + box], dim=1)

    def scaled(side: Tensor) -> Tensor:
        c = box / 2
        return torch.stack([c - side / 2, c - side / 2, c + side / 2, c + side / 2], dim=1)

    return [
        # IoU of a box shifted by t along x: (box - t) / (box + t)
        BoxFamily(
            "shifted box",
            "IoU with the target",
            "∂ loss / ∂ offset  (along the shift, 1/px)",
            box * (1 - iou) / (1 + iou),
            shifted,
            (1.0, 0.0, 1.0, 0.0),
            True,
        ),
        # a centred box of side s inside the target: IoU s² / box²
        BoxFamily(
            "scaled box (centred, inside the target)",
            "IoU with the target",
            "∂ loss / ∂ side  (along the scaling, 1/px)",
            box * np.sqrt(iou),
            scaled,
            (-0.5, -0.5, 0.5, 0.5),
            True,
        ),
        BoxFamily(
            "box moving away",
            "centre distance (px)",
            "∂ loss / ∂ distance  (along the motion, 1/px)",
            box * np.linspace(*APART_RANGE, points),
            shifted,
            (1.0, 0.0, 1.0, 0.0),
            False,
        ),
    ]


def reg_curves(losses: Mapping[str, Any], *, points: int = POINTS, box: float = BOX) -> BranchCurves:
    from autoloss.detection.loss_inputs import apply_loss, paired_iou, reg_inputs

    target = torch.tensor([[0.0, 0.0, box, box]]).expand(points, 4)
    cases = []
    for fam in box_families(points, box):
        t = torch.tensor(fam.params, dtype=torch.float32)
        pred = fam.pred(t)
        direction = torch.tensor(fam.direction)

        def seam(loss: Any, leaf: Tensor) -> Tensor:
            return apply_loss(loss, reg_inputs(leaf, target), (points,))

        case = Case(
            title=fam.title,
            xlabel=fam.xlabel,
            grad_label=fam.grad_label,
            x=_numpy(paired_iou(pred, target) if fam.x_is_iou else t),
            marks=() if fam.x_is_iou else (box,),
        )
        for label, loss in losses.items():
            _fill(case, label, loss, seam, pred, lambda g, d=direction: (g * d).sum(dim=1))
        cases.append(case)
    return BranchCurves("reg", tuple(cases), NOTES["reg"].format(box=box))


# --- shared -----------------------------------------------------------------------------------------


def _fill(
    case: Case,
    label: str,
    loss: Any,
    seam: Callable[[Any, Tensor], Tensor],
    inputs: Tensor,
    project: Callable[[Tensor], Tensor],
) -> None:
    """Evaluate `seam(loss, leaf)` on a fresh float32 leaf copy of `inputs`; record values and the
    gradient, `project`ed to one number per point."""
    leaf = inputs.detach().float().clone().requires_grad_(True)
    values = seam(loss, leaf)
    if values.requires_grad:
        (grad,) = torch.autograd.grad(values.sum(), leaf, allow_unused=True)
    else:
        grad = None  # a loss that does not read the prediction: no gradient at all
    if grad is None:
        grad = torch.zeros_like(leaf)
    case.values[label] = _numpy(values)
    case.grads[label] = _numpy(project(grad))


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().double().numpy()
