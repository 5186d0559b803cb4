"""Loss-like test doubles for the detector seam (plain torch), checked against torchvision's own losses.

Other detection tests import them; they rely only on the seam's protocol (.branch, .text, __call__).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from autoloss.detection.loss_inputs import reg_inputs, sigmoid_cls_inputs


class Double:
    """A Loss-like callable: branch, text and an unreduced torch function of the branch's inputs."""

    def __init__(self, branch: str, text: str, fn) -> None:
        self.branch, self.text, self.fn = branch, text, fn

    def __call__(self, **inputs):
        return self.fn(**inputs)


def _focal(X, Q, PY, NY):
    # sigmoid focal loss without alpha (the seam applies alpha_t), gamma 2, as torchvision computes it
    p = torch.sigmoid(X)
    ce = F.binary_cross_entropy_with_logits(X, PY, reduction="none")
    p_t = p * PY + (1 - p) * NY
    return ce * (1 - p_t) ** 2


FOCAL = Double("cls-sigmoid", "focal-double", _focal)
BCE = Double(
    "cls-sigmoid",
    "bce-double",
    lambda X, Q, PY, NY: F.binary_cross_entropy_with_logits(X, PY, reduction="none"),
)
GIOU = Double("reg", "giou-double", lambda I, U, E: 1 - I / U + (E - U) / E)
IOU = Double("reg", "iou-double", lambda I, U, E: 1 - I / U)
CE = Double("cls-softmax", "ce-double", lambda X, Y, Z: -(Y * torch.log_softmax(X, dim=1)).sum(dim=1))


def exploding(branch: str, factor: float = 1e30) -> Double:
    """A loss whose value explodes: factor * a well-behaved loss."""
    base = {"cls-sigmoid": _focal, "cls-softmax": CE.fn, "reg": GIOU.fn}[branch]
    return Double(branch, f"explode-{branch}", lambda **kw: factor * base(**kw))


def nan_loss(branch: str) -> Double:
    base = {"cls-sigmoid": _focal, "cls-softmax": CE.fn, "reg": GIOU.fn}[branch]
    return Double(branch, f"nan-{branch}", lambda **kw: base(**kw) * float("nan"))


def _boxes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], dim=1)


def test_focal_double_times_alpha_t_equals_torchvision_focal():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g) * 3
    onehot = torch.zeros(7, 4)
    onehot[torch.arange(7), torch.randint(0, 4, (7,), generator=g)] = 1
    inputs = sigmoid_cls_inputs(logits, onehot, torch.rand(7, generator=g))
    alpha_t = 0.25 * onehot + 0.75 * (1 - onehot)
    ours = alpha_t * FOCAL(**inputs)
    torch.testing.assert_close(ours, sigmoid_focal_loss(logits, onehot, reduction="none"))


def test_giou_double_equals_torchvision_giou_including_disjoint_boxes():
    pred, target = _boxes(50, 1), _boxes(50, 2)  # random pairs: most are disjoint, some overlap
    ours = GIOU(**reg_inputs(pred, target))
    torch.testing.assert_close(ours, generalized_box_iou_loss(pred, target, reduction="none"))


def test_ce_double_equals_cross_entropy():
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(9, 6, generator=g), torch.randint(0, 6, (9,), generator=g)
    y = F.one_hot(labels, 6).float()
    torch.testing.assert_close(
        CE(X=logits, Y=y, Z=torch.ones_like(y)), F.cross_entropy(logits, labels, reduction="none")
    )
