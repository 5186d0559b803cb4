"""Model optimisation simulation (MOS): optimise a toy model with the candidate loss, score the result.

- cls-softmax / cls-sigmoid: a tiny MLP trained full-batch for `cls_steps` steps of SGD with momentum on
  the fixed detection-like set of `mos_data`; the score is a COCO-style AP on held-out samples (mean over
  foreground classes and IoU thresholds 0.50:0.95, where a sample counts as a hit at threshold t only if its
  quality is >= t). SGD, not Adam, so that badly scaled losses are punished as a detector's SGD would.
- reg: free box deltas (Faster R-CNN's (dx, dy, dw, dh) on each start box) optimised with Adam for
  `reg_steps` steps toward their targets; the score is the mean IoU reached.

A candidate passes when its score reaches `min_ratio` x the branch baseline's score on the very same
simulation (ce, focal, giou: computed once per config and cached). The calibration (BENCHMARKS.md,
"Screening"): cls MOS separates bad from good but cannot rank CE-like losses, hence one shared seed and a
relative threshold; reg MOS ranks well. A NaN or inf at any step rejects. Nothing random happens after
the cached data set and initial weights are drawn, so the same loss always gets the same score.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

from autoloss.checks.config import CheckConfig, MOSConfig
from autoloss.checks.mos_data import ClsProblem, RegProblem, cls_problem, reg_problem
from autoloss.checks.probes import BOX_EPS, DTYPE, sigmoid_inputs, softmax_inputs
from autoloss.checks.verdict import single_thread
from autoloss.loss import Loss
from autoloss.spaces.branches import FOCAL_ALPHA
from autoloss.spaces.named import DEFAULTS

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)
PRIOR_BIAS = -math.log(99.0)  # one-stage heads start their class logits at p = 0.01 (RetinaNet, FCOS)
MAX_DW = math.log(1000.0 / 16)  # torchvision's clamp on decoded log-size deltas


def simulate(loss: Loss, config: MOSConfig) -> tuple[float | None, str | None]:
    """(score, None), or (None, why) when the optimisation produced a non-finite number."""
    with torch.enable_grad(), single_thread():
        if loss.branch == "reg":
            return _simulate_reg(loss, config)
        return _simulate_cls(loss, config)


def mos(loss: Loss, config: CheckConfig) -> tuple[bool, str, float | None]:
    score, failure = simulate(loss, config.mos)
    if failure is not None:
        return False, failure, None
    baseline = baseline_score(loss.branch, config.mos)
    ratio = config.mos.reg_min_ratio if loss.branch == "reg" else config.mos.cls_min_ratio
    what = "mean IoU" if loss.branch == "reg" else "AP"
    name = DEFAULTS[loss.branch]
    if score is None or score < ratio * baseline:
        return False, f"{what} {score:.4f} is below {ratio:g} x {name}'s {baseline:.4f}", score
    return True, f"{what} {score:.4f} ({score / baseline:.3f} x {name}'s {baseline:.4f})", score


@lru_cache(maxsize=8)
def baseline_score(branch: str, config: MOSConfig) -> float:
    """The branch default loss's MOS score under `config` (once per process and config)."""
    score, failure = simulate(Loss.named(DEFAULTS[branch]), config)
    if score is None:
        raise RuntimeError(f"the {branch} baseline {DEFAULTS[branch]} failed its own MOS: {failure}")
    return score


@lru_cache(maxsize=8)
def _cls_targets(branch: str, config: MOSConfig) -> tuple[dict[str, Tensor], Tensor | None, float]:
    """Fixed loss inputs for the training set, the alpha_t weights and the normaliser (sigmoid)."""
    p = cls_problem(config)
    n, k = p.train_x.shape[0], config.cls_classes
    if branch == "cls-softmax":
        return softmax_inputs(torch.empty(n, k + 1), p.train_labels, p.train_quality), None, float(n)
    inputs = sigmoid_inputs(torch.empty(n, k), p.train_labels, p.train_quality)
    alpha = FOCAL_ALPHA * inputs["PY"] + (1 - FOCAL_ALPHA) * inputs["NY"]
    # One-stage detectors normalise the summed loss by the number of positives.
    return inputs, alpha, max(1.0, float(inputs["PY"].sum()))


def _simulate_cls(loss: Loss, config: MOSConfig) -> tuple[float | None, str | None]:
    p = cls_problem(config)
    softmax = loss.branch == "cls-softmax"
    targets, alpha, norm = _cls_targets(loss.branch, config)
    w1, b1, w2, b2 = (t.clone() for t in p.init)
    if not softmax:  # K sigmoid outputs, no background column, started at the detectors' prior
        w2, b2 = w2[:, 1:].clone(), torch.full_like(b2[1:], PRIOR_BIAS)
    params = [t.requires_grad_(True) for t in (w1, b1, w2, b2)]
    velocity = [torch.zeros_like(t) for t in params]
    for step in range(config.cls_steps):
        logits = torch.addmm(params[3], torch.tanh(torch.addmm(params[1], p.train_x, params[0])), params[2])
        out = torch.broadcast_to(
            loss.fn(*({**targets, "X": logits}[n] for n in loss.inputs)),
            logits.shape[:1] if softmax else logits.shape,
        )
        total = (out if alpha is None else out * alpha).sum() / norm
        value = float(total.detach())
        if not math.isfinite(value):
            return None, f"non-finite loss ({value}) at training step {step} of {config.cls_steps}"
        grads = torch.autograd.grad(total, params, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(params, grads, strict=True)]
        with torch.no_grad():  # SGD with momentum, as torch.optim.SGD (dampening 0), on all tensors at once
            torch._foreach_mul_(velocity, config.cls_momentum)
            torch._foreach_add_(velocity, grads)
            torch._foreach_add_(params, velocity, alpha=-config.cls_lr)
    with torch.no_grad():
        if not all(bool(t.isfinite().all()) for t in params):
            return None, f"non-finite weights after {config.cls_steps} training steps"
        logits = torch.tanh(p.test_x @ params[0] + params[1]) @ params[2] + params[3]
        scores = torch.softmax(logits, dim=1)[:, 1:] if softmax else torch.sigmoid(logits)
        return coco_style_ap(scores, p), None


def coco_style_ap(scores: Tensor, p: ClsProblem) -> float:
    """Mean over foreground classes and IoU thresholds of the non-interpolated AP on the test set.

    A sample of class k is a true positive at threshold t if its quality >= t; otherwise a detection of it
    is a false positive, as a badly localised box is in COCO AP.
    """
    aps = []
    thresholds = IOU_THRESHOLDS.to(DTYPE)[:, None]
    for k in range(scores.shape[1]):
        order = torch.argsort(scores[:, k], descending=True, stable=True)
        is_k = p.test_labels[order] == k + 1
        positives = int(is_k.sum())
        if positives == 0:
            continue
        hits = (is_k[None, :] & (p.test_quality[order][None, :] >= thresholds)).to(DTYPE)  # [T, n]
        precision = hits.cumsum(dim=1) / torch.arange(1, hits.shape[1] + 1, dtype=DTYPE)
        aps.append((precision * hits).sum(dim=1) / positives)
    return float(torch.stack(aps).mean()) if aps else 0.0


def _simulate_reg(loss: Loss, config: MOSConfig) -> tuple[float | None, str | None]:
    prob = reg_problem(config)
    deltas = torch.zeros_like(prob.anchors).requires_grad_(True)
    m, v = torch.zeros_like(deltas), torch.zeros_like(deltas)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(config.reg_steps):
        i, u, e = _box_inputs(prob, deltas)
        args = {"I": i, "U": u, "E": e}
        total = torch.broadcast_to(loss.fn(*(args[n] for n in loss.inputs)), i.shape).mean()
        value = float(total.detach())
        if not math.isfinite(value):
            return None, f"non-finite loss ({value}) at optimisation step {step} of {config.reg_steps}"
        (grad,) = torch.autograd.grad(total, deltas, allow_unused=True)
        if grad is None:
            break  # the loss does not depend on the boxes: nothing will ever move
        with torch.no_grad():  # Adam, as torch.optim.Adam with default betas
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v / (1 - beta2 ** (step + 1))).sqrt_().add_(eps)
            deltas.addcdiv_(m, denom, value=-config.reg_lr / (1 - beta1 ** (step + 1)))
    with torch.no_grad():
        if not bool(deltas.isfinite().all()):
            return None, f"non-finite box parameters after {config.reg_steps} steps"
        i, u, _ = _box_inputs(prob, deltas)
        return float((i / u).mean()), None


def _box_inputs(prob: RegProblem, deltas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """I, U + eps, E + eps of the decoded boxes (Faster R-CNN decoding of (dx, dy, dw, dh) on each start
    box) against their targets; the x and y axes are computed together to keep the autograd graph short.
    Equal to `probes.box_terms` on the decoded boxes."""
    centre = prob.anchors[:, :2] + deltas[:, :2] * prob.anchors[:, 2:]
    half = 0.5 * prob.anchors[:, 2:] * torch.exp(deltas[:, 2:].clamp(max=MAX_DW))
    lo, hi = centre - half, centre + half
    t_lo, t_hi = prob.targets[:, :2], prob.targets[:, 2:]
    overlap = (torch.minimum(hi, t_hi) - torch.maximum(lo, t_lo)).clamp(min=0)
    inter = overlap[:, 0] * overlap[:, 1]
    size = 2.0 * half
    t_size = t_hi - t_lo
    union = size[:, 0] * size[:, 1] + t_size[:, 0] * t_size[:, 1] - inter
    span = torch.maximum(hi, t_hi) - torch.minimum(lo, t_lo)
    return inter, union + BOX_EPS, span[:, 0] * span[:, 1] + BOX_EPS
