"""Convergence property verification (CPV): does minimising the loss move the prediction the right way?

Each branch stacks all of its probe cases — logit grids, box families — into one grid (`cpv_cls`,
`cpv_reg`), evaluated together with the validity probe in one forward+backward per candidate
(`probe_batch`); this module holds the shared tolerance rules and the dispatch. "Does not increase"
always means "not by more than `rtol` of the case's largest |loss| plus `atol`": float32 rounding must
not reject a loss, and a genuine rise is far larger than that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from autoloss.checks.config import CheckConfig, CPVConfig
from autoloss.loss import Loss


@dataclass(frozen=True)
class Grid:
    """Cases x points along one axis; `cases` names each case for the reasons."""

    values: Tensor  # [cases, points]
    coords: Tensor  # [points] (or [cases, points]): the swept variable
    cases: tuple[str, ...]
    variable: str = "x"  # the swept quantity, for the reasons


def tolerance(values: Tensor, config: CPVConfig) -> Tensor:
    """Per-case slack [cases, 1] for comparisons of loss values."""
    return config.rtol * values.abs().amax(dim=1, keepdim=True) + config.atol


def first_rise(grid: Grid, config: CPVConfig, mask: Tensor | None = None) -> str | None:
    """Where the loss rises along the grid by more than the tolerance (None if nowhere).

    `mask` [cases, points - 1] limits the steps that count (e.g. only where IoU rises).
    """
    step = grid.values[:, 1:] - grid.values[:, :-1]
    bad = step > tolerance(grid.values, config)
    if mask is not None:
        bad &= mask
    if not bool(bad.any()):
        return None
    case, i = (int(v) for v in bad.nonzero()[0])
    coords = grid.coords if grid.coords.dim() == 1 else grid.coords[case]
    return (
        f"the loss rises by {float(step[case, i]):.3g} as {grid.variable} goes "
        f"from {float(coords[i]):.3g} to {float(coords[i + 1]):.3g} ({grid.cases[case]})"
    )


def first_flat(grid: Grid, config: CPVConfig) -> str | None:
    """A case whose loss does not fall (first point minus last) by a clear margin."""
    fall = grid.values[:, 0] - grid.values[:, -1]
    need = config.strict * grid.values.abs().amax(dim=1) + config.atol
    bad = fall <= need
    if not bool(bad.any()):
        return None
    case = int(bad.nonzero()[0, 0])
    return (
        f"the loss does not fall as {grid.variable} moves toward the right answer "
        f"(total change {0.0 - float(fall[case]):.3g}; {grid.cases[case]})"
    )


def faded(grad_end: Tensor, grad_grid: Tensor, config: CPVConfig) -> Tensor:
    """[cases] bool: |gradient| at the saturated end is at most `fade_ratio` of its largest on the grid."""
    peak = grad_grid.abs().amax(dim=1)
    return grad_end.abs() <= config.fade_ratio * peak + config.atol


def cpv(
    loss: Loss, config: CheckConfig, evaluation: tuple[Tensor, Tensor] | None = None
) -> tuple[bool, str, float | None]:
    """(passed, reason, score) for the loss's branch; score is None (CPV is a yes/no filter).

    `evaluation` is `probe_batch.evaluate(loss, config)`, when the caller already has it.
    """
    from autoloss.checks import cpv_cls, cpv_reg, probe_batch

    check = {
        "cls-softmax": cpv_cls.softmax_cpv,
        "cls-sigmoid": cpv_cls.sigmoid_cpv,
        "reg": cpv_reg.reg_cpv,
    }[loss.branch]
    if evaluation is None:
        with torch.enable_grad():
            evaluation = probe_batch.evaluate(loss, config)
    reason, detail = check(probe_batch.cpv_part(evaluation, loss, config), config.cpv)
    if reason is not None:
        return False, reason, None
    return True, detail, None
