"""CPV for the classification branches: logit grids, judged on one forward+backward per candidate.

cls-softmax (per RoI, K+1 classes, background = 0): for each true class c (foreground at several IoU
qualities Z, background with Z = 1) and a few settings of the other logits, sweep x_c over
[-span, span]. The loss must not rise as x_c rises and must fall overall; where p_c is unsaturated its
gradient must push x_c up and the other logits down; the x_c-gradient must fade as p_c -> 1 (this rejects
the unbounded -x_c, which a plain monotonicity test passes); a confident right answer must cost less than a
confident wrong one.

cls-sigmoid (per element): sweep one logit of a row. A negative's loss must not fall as x rises, a
positive's (Q = 1) must not rise, both strictly somewhere and with fading gradients; for soft positives
(0 < Q < 1) the loss must have a minimiser above p = 0 that does not move down as Q rises — IoU-aware
losses such as cse-b-cls are minimised below p = 1 when Q < 1, which is allowed.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from autoloss.checks.config import CPVConfig
from autoloss.checks.cpv import Grid, faded, first_flat, first_rise, tolerance
from autoloss.checks.probes import DTYPE, Probe, sigmoid_inputs, softmax_inputs

_C = 4  # classes in the softmax grid: background + 3
_SOFTMAX_CONTEXTS = ((0.0, 0.0, 0.0), (1.5, -1.0, 0.5), (4.0, -2.0, -2.0))  # the other logits
_SIGMOID_CONTEXTS = ((-4.0, -4.0), (1.0, -2.0))  # the row's other logits (negatives)


@lru_cache(maxsize=8)
def softmax_grid(config: CPVConfig) -> tuple[Probe, tuple[str, ...], Tensor, Tensor]:
    t = torch.linspace(-config.logit_span, config.logit_span, config.grid, dtype=DTYPE)
    sweep = torch.cat([t, torch.tensor([config.fade_logit], dtype=DTYPE)])
    labels = [(0, 1.0)] + [(c, z) for c in (1, 3) for z in config.fg_quality]
    xs, ys, zs, names = [], [], [], []
    for c, z in labels:
        for ctx in _SOFTMAX_CONTEXTS:
            others = [k for k in range(_C) if k != c]
            x = torch.zeros(len(sweep), _C, dtype=DTYPE)
            x[:, others] = torch.tensor(ctx, dtype=DTYPE)
            x[:, c] = sweep
            xs.append(x)
            ys.append(torch.full((len(sweep),), c))
            zs.append(torch.full((len(sweep),), z, dtype=DTYPE))
            kind = "background" if c == 0 else f"class {c} (Z={z:g})"
            names.append(f"{kind}, other logits {ctx}")
    # Confident right (x_c = 8) and confident wrong (another class at 8) for every label.
    for c, z in labels:
        right = torch.zeros(_C, dtype=DTYPE)
        right[c] = 8.0
        wrong = torch.zeros(_C, dtype=DTYPE)
        wrong[(c + 1) % _C] = 8.0
        xs.append(torch.stack([right, wrong]))
        ys.append(torch.tensor([c, c]))
        zs.append(torch.tensor([z, z], dtype=DTYPE))
    x, y, z = torch.cat(xs), torch.cat(ys), torch.cat(zs)
    probe = Probe("cls-softmax", x, softmax_inputs(x, y, z), torch.arange(0))
    return probe, tuple(names), y, sweep


@lru_cache(maxsize=8)
def _softmax_fixed(config: CPVConfig) -> tuple[Tensor, Tensor]:
    """What depends on the grid alone, computed once: the true-class mask and p_c along each sweep."""
    probe, names, labels, sweep = softmax_grid(config)
    swept = len(names) * len(sweep)
    hot = torch.nn.functional.one_hot(labels[:swept], _C).bool()
    return hot, torch.softmax(probe.pred[:swept], dim=1)[hot].view(len(names), len(sweep))


def softmax_cpv(evaluation: tuple[Tensor, Tensor], config: CPVConfig) -> tuple[str | None, str]:
    """(reason or None, detail) from the loss's (values, gradients) on `softmax_grid(config)`'s probe."""
    _, names, labels, sweep = softmax_grid(config)
    hot, p_c = _softmax_fixed(config)
    cases, points = len(names), len(sweep)
    values, grad = evaluation
    swept = cases * points
    v = values[:swept].view(cases, points)
    g_c = grad[:swept][hot].view(cases, points)
    g_other = grad[:swept].masked_fill(hot, 0.0)
    grid = Grid(v[:, :-1], sweep[:-1], names, "x_c")
    reason = first_rise(grid, config) or first_flat(grid, config)
    if reason is not None:
        return f"not a descent direction: {reason}", ""
    fade = faded(g_c[:, -1], g_c[:, :-1], config)
    if not bool(fade.all()):
        case = int((~fade).nonzero()[0, 0])
        return (
            f"unbounded: the gradient in x_c does not fade as p_c -> 1 "
            f"(|grad| {float(g_c[case, -1].abs()):.3g} at x_c = {config.fade_logit:g}; {names[case]})",
            "",
        )
    lo, hi = config.unsaturated
    live = (p_c[:, :-1] > lo) & (p_c[:, :-1] < hi)
    gtol = config.grad_rtol * g_c[:, :-1].abs().amax(dim=1, keepdim=True) + config.atol
    pushes_up = (g_c[:, :-1] < -gtol) | ~live
    other_sum = g_other.sum(dim=1).view(cases, points)[:, :-1]
    other_min = g_other.amin(dim=1).view(cases, points)[:, :-1]
    pushes_down = ((other_sum > gtol) & (other_min >= -gtol)) | ~live
    for ok, what in ((pushes_up, "x_c up"), (pushes_down, "the other logits down")):
        if not bool(ok.all()):
            case, i = (int(k) for k in (~ok).nonzero()[0])
            return (
                f"gradient does not push {what} at p_c = {float(p_c[case, i]):.3g} ({names[case]})",
                "",
            )
    pairs = values[swept:].view(-1, 2)
    margin = config.strict * pairs.abs().amax(dim=1) + config.atol
    bad = pairs[:, 0] >= pairs[:, 1] - margin
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        return (
            f"rewards wrong answers: a confident correct prediction costs {float(pairs[k, 0]):.3g}, "
            f"a confident wrong one {float(pairs[k, 1]):.3g} (true class {int(labels[swept + 2 * k])})",
            "",
        )
    return None, f"descends on {cases} logit sweeps (background and Z = {config.fg_quality}), gradient fades"


@lru_cache(maxsize=8)
def sigmoid_grid(config: CPVConfig) -> tuple[Probe, tuple[str, ...], tuple[float, ...], int]:
    t = torch.linspace(-config.logit_span, config.logit_span, config.grid, dtype=DTYPE)
    qualities = (0.0, *config.soft_quality)  # Q = 0 is the negative
    xs, labels, qs, names = [], [], [], []
    for q in qualities:
        for ctx in _SIGMOID_CONTEXTS:
            # The fade point sits at the saturated end the loss pushes toward.
            end = -config.fade_logit if q == 0.0 else config.fade_logit
            sweep = torch.cat([t, torch.tensor([end], dtype=DTYPE)])
            x = torch.empty(len(sweep), 1 + len(ctx), dtype=DTYPE)
            x[:, 1:] = torch.tensor(ctx, dtype=DTYPE)
            x[:, 0] = sweep
            xs.append(x)
            labels.append(torch.full((len(sweep),), 0 if q == 0.0 else 1))
            qs.append(torch.full((len(sweep),), q, dtype=DTYPE))
            names.append(("negative" if q == 0.0 else f"positive (Q={q:g})") + f", other logits {ctx}")
    x = torch.cat(xs)
    probe = Probe("cls-sigmoid", x, sigmoid_inputs(x, torch.cat(labels), torch.cat(qs)), torch.arange(0))
    return probe, tuple(names), qualities, len(t) + 1


@lru_cache(maxsize=8)
def _sigmoid_fixed(config: CPVConfig) -> tuple[Tensor, Tensor]:
    """p along the sweep and where it is unsaturated: the grid's alone, computed once."""
    probe, _, _, points = sigmoid_grid(config)
    p = torch.sigmoid(probe.pred[: points - 1, 0])
    lo, hi = config.unsaturated
    return p, (p > lo) & (p < hi)


def sigmoid_cpv(evaluation: tuple[Tensor, Tensor], config: CPVConfig) -> tuple[str | None, str]:
    """(reason or None, detail) from the loss's (values, gradients) on `sigmoid_grid(config)`'s probe."""
    probe, names, qualities, points = sigmoid_grid(config)
    values, grad = evaluation
    per_q = len(names) // len(qualities)
    # The detector sums the loss over a row's elements; Softmax may couple them, so judge the row sum.
    v = values.sum(dim=1).view(len(names), points)
    g = grad[:, 0].view(len(names), points)
    x = probe.pred[:points, 0]
    neg, pos = slice(0, per_q), slice(len(names) - per_q, len(names))  # Q = 0 and the largest Q (1.0)
    p, live = _sigmoid_fixed(config)
    gtol = config.grad_rtol * g[:, :-1].abs().amax(dim=1, keepdim=True) + config.atol
    # A negative's loss read from x = +span down to -span must fall just as a positive's does upward.
    checks = (
        (Grid(v[neg, :-1].flip(1), x[:-1].flip(0), names[neg]), g[neg], gtol[neg], 1.0, "down", "-"),
        (Grid(v[pos, :-1], x[:-1], names[pos]), g[pos], gtol[pos], -1.0, "up", "+"),
    )
    for grid, grad_case, tol, sign, where, end in checks:
        reason = first_rise(grid, config) or first_flat(grid, config)
        if reason is not None:
            return f"not a descent direction: {reason}", ""
        fade = faded(grad_case[:, -1], grad_case[:, :-1], config)
        if not bool(fade.all()):
            case = int((~fade).nonzero()[0, 0])
            return (
                f"unbounded: the gradient does not fade as x -> {end}{config.fade_logit:g} "
                f"(|grad| {float(grad_case[case, -1].abs()):.3g}; {grid.cases[case]})",
                "",
            )
        right_way = (sign * grad_case[:, :-1] > tol) | ~live
        if not bool(right_way.all()):
            case, i = (int(k) for k in (~right_way).nonzero()[0])
            return f"gradient does not push x {where} at p = {float(p[i]):.3g} ({grid.cases[case]})", ""
    return _soft_positive_reason(v[per_q:, :-1], x[:-1], names[per_q:], qualities[1:], per_q, config)


def _soft_positive_reason(
    v: Tensor, x: Tensor, names: tuple[str, ...], qualities: tuple[float, ...], per_q: int, config: CPVConfig
) -> tuple[str | None, str]:
    """The minimising logit must exist above the bottom of the grid and not fall as Q rises."""
    tol = tolerance(v, config)
    near_min = v <= v.amin(dim=1, keepdim=True) + tol
    # The smallest logit within tolerance of the minimum: flat saturated tails do not count as a move.
    first = near_min.float().argmax(dim=1)
    if bool((first == 0).any()):
        case = int((first == 0).nonzero()[0, 0])
        return f"pushes soft positives to p = 0: {names[case]} is smallest at the bottom of the grid", ""
    by_q = first.view(len(qualities), per_q)
    drop = by_q[1:] < by_q[:-1] - 1  # one grid step of slack for float32 ties
    if bool(drop.any()):
        k, ctx = (int(i) for i in drop.nonzero()[0])
        return (
            f"the minimising probability falls as Q rises: x* = {float(x[by_q[k, ctx]]):.3g} at "
            f"Q={qualities[k]:g} but {float(x[by_q[k + 1, ctx]]):.3g} at Q={qualities[k + 1]:g}",
            "",
        )
    best = ", ".join(f"Q={q:g}: x*={float(x[by_q[i, 0]]):.3g}" for i, q in enumerate(qualities))
    return None, f"negatives fall, positives rise, gradients fade; soft-positive minimisers {best}"
