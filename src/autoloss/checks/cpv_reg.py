"""CPV for the regression branch: families of predicted boxes walking onto their target.

For three targets (square, tall, wide) and six families (shift sideways from a disjoint start, shift
diagonally, shrink from 3x, grow from 0.2x, squash the aspect ratio, shift and scale together), the loss
must not rise where IoU rises, must be lowest at the perfect box, and its gradient (w.r.t. the predicted
xyxy coordinates, through I/U/E) must point uphill in IoU for every overlapping box. The whole set is
probed at two pixel scales: a loss of raw pixel² such as `Sub(U,I)` changes its range by the area factor,
whereas scale-free losses keep it — the check is loose (`scale_ratio`) because the published A/B losses
carry pixel constants (+1, +2, +3) and must pass. Disjoint boxes are only reported: IoU loss has no
gradient there, and is a sensible loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from autoloss.checks.config import CPVConfig
from autoloss.checks.cpv import Grid, first_flat, first_rise, tolerance
from autoloss.checks.probes import DTYPE, Probe, box_terms

_TARGETS = ((100.0, 100.0, 48.0, 48.0), (60.0, 150.0, 24.0, 72.0), (160.0, 80.0, 96.0, 40.0))
# Each family maps s in [0, 1] (1 = the perfect box) to (dx, dy, width factor, height factor),
# offsets in units of the target's width and height.
_FAMILIES = {
    "shift from disjoint": lambda r: (1.5 * r, 0 * r, 1 + 0 * r, 1 + 0 * r),
    "diagonal shift": lambda r: (0.9 * r, 0.9 * r, 1 + 0 * r, 1 + 0 * r),
    "shrink from 3x": lambda r: (0 * r, 0 * r, 1 + 2 * r, 1 + 2 * r),
    "grow from 0.2x": lambda r: (0 * r, 0 * r, 1 - 0.8 * r, 1 - 0.8 * r),
    "aspect ratio": lambda r: (0 * r, 0 * r, 1 + 2 * r, 1 / (1 + 2 * r)),
    "shift and scale": lambda r: (0.6 * r, 0.3 * r, 1 + r, 1 + 0.5 * r),
}


@dataclass(frozen=True)
class RegGrid:
    probe: Probe
    names: tuple[str, ...]  # one per case: (scale, target, family)
    iou: Tensor  # [cases, points]
    iou_grad: Tensor  # [rows, 4]: d IoU / d predicted box
    towards: Tensor  # [rows, 4]: target minus prediction (where "toward the target" points)
    groups: int  # cases per (scale, target)


@lru_cache(maxsize=8)
def reg_grid(config: CPVConfig) -> RegGrid:
    r = 1.0 - torch.linspace(0.0, 1.0, config.grid, dtype=DTYPE)  # distance from perfect: 1 -> 0
    preds, targets, names = [], [], []
    for scale in (1.0, config.scale_factor):
        for ti, (cx, cy, w, h) in enumerate(_TARGETS):
            target = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dtype=DTYPE) * scale
            for family, move in _FAMILIES.items():
                dx, dy, fw, fh = move(r)
                pcx, pcy, pw, ph = cx + dx * w, cy + dy * h, w * fw, h * fh
                box = torch.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], dim=1)
                preds.append(box * scale)
                targets.append(target.expand(len(r), 4))
                names.append(f"target {ti} at {scale:g}x, {family}")
    pred, target = torch.cat(preds), torch.cat(targets)
    leaf = pred.clone().requires_grad_(True)
    with torch.enable_grad():
        i, u, _ = box_terms(leaf, target)
        iou = i / u
        (iou_grad,) = torch.autograd.grad(iou.sum(), leaf)
    probe = Probe("reg", pred, {"target": target}, torch.arange(0))
    return RegGrid(
        probe, tuple(names), iou.detach().view(len(names), -1), iou_grad, target - pred, len(_FAMILIES)
    )


@lru_cache(maxsize=8)
def _reg_fixed(config: CPVConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """What depends on the grid alone, computed once: where IoU rises along each family, IoU per row,
    the overlapping rows and |d IoU / d box|."""
    grid = reg_grid(config)
    iou = grid.iou.reshape(-1)
    return (
        grid.iou[:, 1:] > grid.iou[:, :-1] + 1e-6,
        iou,
        (iou > 0) & (iou < 0.999),
        grid.iou_grad.norm(dim=1),
    )


def reg_cpv(evaluation: tuple[Tensor, Tensor], config: CPVConfig) -> tuple[str | None, str]:
    """(reason or None, detail) from the loss's (values, gradients) on `reg_grid(config)`'s probe."""
    grid = reg_grid(config)
    values, grad = evaluation
    cases = len(grid.names)
    v = values.view(cases, -1)
    rising, iou, overlapping, iou_grad_norm = _reg_fixed(config)
    families = Grid(v, grid.iou, grid.names, "IoU")
    reason = first_rise(families, config, mask=rising) or first_flat(families, config)
    if reason is not None:
        return f"not a descent direction: {reason}", ""
    half = cases // 2  # the first half of the cases is at 1x, the second at scale_factor x
    spread = v.view(2, -1).amax(dim=1) - v.view(2, -1).amin(dim=1)
    ratio = float(spread[1] / spread[0])
    if not 1.0 / config.scale_ratio <= ratio <= config.scale_ratio:
        return (
            f"not scale-free: scaling the boxes by {config.scale_factor:g}x changes the loss's range "
            f"{ratio:.3g}-fold (allowed: {config.scale_ratio:g})",
            "",
        )
    # Lowest at the perfect box: every family of one (scale, target) ends on the same perfect box.
    per_target = v.view(-1, grid.groups * v.shape[1])
    perfect = v[:, -1].view(-1, grid.groups)[:, 0]
    slack = tolerance(per_target, config).squeeze(1)
    below = per_target.amin(dim=1) < perfect - slack
    if bool(below.any()):
        k = int(below.nonzero()[0, 0])
        return (
            f"not lowest at the perfect box: {float(per_target[k].amin()):.4g} elsewhere vs "
            f"{float(perfect[k]):.4g} at IoU 1 ({grid.names[k * grid.groups].split(',')[0]})",
            "",
        )
    uphill = (grad * grid.iou_grad).sum(dim=1)  # < 0: a descent step raises IoU
    size = grad.norm(dim=1) * iou_grad_norm
    wrong = overlapping & ~(uphill < -1e-4 * size)
    if bool(wrong.any()):
        row = int(wrong.nonzero()[0, 0])
        return (
            f"gradient does not move the box toward its target at IoU {float(iou[row]):.3g} "
            f"({grid.names[row // v.shape[1]]})",
            "",
        )
    return None, f"descends on {half} box families at 2 scales (range ratio {ratio:.2f}); " + _disjoint(
        grad, grid, iou
    )


def _disjoint(grad: Tensor, grid: RegGrid, iou: Tensor) -> str:
    """How the gradient treats disjoint boxes: reported, not required."""
    disjoint = iou <= 0
    if not bool(disjoint.any()):
        return "no disjoint boxes probed"
    g = grad[disjoint]
    toward = (-g * grid.towards[disjoint]).sum(dim=1) > 0
    if not bool((g.abs().amax(dim=1) > 0).any()):
        return "disjoint boxes get no gradient (like IoU loss)"
    return f"disjoint boxes: the gradient moves {float(toward.float().mean()):.0%} of them toward the target"
