"""Fixed probe batches and the one forward+backward every filter is built on.

A probe is plain tensors in float32 (as detectors train) in the branch's input order, plus the tensor the
gradient is taken with respect to: the logits `X` for classification, the predicted xyxy box coordinates for
regression (I/U/E are computed from the boxes with autograd, so a loss's gradient is judged where the detector
feels it — a `Sqrt(I)` is infinite at I = 0 even though dI/dbox is 0 there).

Rows never interact (Softmax and Dot act along the class axis of one row), so many probe cases can share one
call of the compiled loss: the filters stack all their cases into one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from autoloss.checks.config import ProbeConfig
from autoloss.loss import Loss
from autoloss.spaces.boxes import BOX_EPS
from autoloss.spaces.boxes import box_terms as shared_box_terms

DTYPE = torch.float32
SOFTMAX_CLASSES = 4  # background (index 0) + 3 foreground classes
SIGMOID_CLASSES = 3


@dataclass(frozen=True)
class Probe:
    """Inputs for one branch. `pred` is the leaf the gradient is taken for; `fixed` holds the other inputs
    (for reg: `fixed["target"]` boxes). `key_rows` selects the moderate rows the functional key reads."""

    branch: str
    pred: Tensor
    fixed: dict[str, Tensor]
    key_rows: Tensor
    label_pairs: tuple[Tensor, Tensor] | None = None  # rows with equal prediction and different labels


def box_terms(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """I, U + eps, E + eps of paired xyxy boxes [N, 4], as the detection seam computes them."""
    return shared_box_terms(pred, target, BOX_EPS)


def forward_backward(loss: Loss, probe: Probe) -> tuple[Tensor, Tensor]:
    """The loss's unreduced values on the probe and d(sum of values)/d(pred), both detached.

    Values come out [N] (cls-softmax, reg) or [N, K] (cls-sigmoid) even when the expression is smaller
    (a constant); a gradient the expression does not have is zeros. The loss runs as written, step by
    step (`Loss.probe_fn`): one call does not repay compiling it.
    """
    if probe.branch == "reg":
        pred, (i, u, e) = _box_graph(probe)
        args = {"I": i, "U": u, "E": e}
        shape: tuple[int, ...] = (pred.shape[0],)
    else:
        pred = probe.pred.detach().clone().requires_grad_(True)
        args = {**probe.fixed, "X": pred}
        shape = tuple(pred.shape) if probe.branch == "cls-sigmoid" else (pred.shape[0],)
    out = loss.probe_fn(*(args[name] for name in loss.inputs))
    out = torch.broadcast_to(out, shape)
    if out.requires_grad:
        # retain_graph: the probe's box graph is shared by every candidate (see `_box_graph`).
        (grad,) = torch.autograd.grad(out.sum(), pred, allow_unused=True, retain_graph=probe.branch == "reg")
    else:
        grad = None
    if grad is None:
        grad = torch.zeros_like(pred)
    return out.detach(), grad.detach()


_BOX_GRAPHS: dict[int, tuple[Probe, Tensor, tuple[Tensor, Tensor, Tensor]]] = {}


def _box_graph(probe: Probe) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
    """The predicted boxes as a leaf and I, U, E computed from them, once per probe: every candidate's
    backward runs through this one retained graph, with the very ops (and gradients) a graph of its own
    would have, at a third less cost per reg candidate than rebuilding it."""
    cached = _BOX_GRAPHS.get(id(probe))
    if cached is None or cached[0] is not probe:
        leaf = probe.pred.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            terms = box_terms(leaf, probe.fixed["target"])
        if len(_BOX_GRAPHS) >= 16:
            _BOX_GRAPHS.clear()
        cached = _BOX_GRAPHS[id(probe)] = (probe, leaf, terms)
    return cached[1], cached[2]


def softmax_inputs(x: Tensor, labels: Tensor, quality: Tensor) -> dict[str, Tensor]:
    """Y one-hot and Z (IoU for foreground, 1 for background) broadcast to the logits' shape [N, C]."""
    y = torch.nn.functional.one_hot(labels, x.shape[1]).to(DTYPE)
    z = torch.where(labels == 0, torch.ones_like(quality), quality)[:, None].expand_as(x).contiguous()
    return {"Y": y, "Z": z}


def sigmoid_inputs(x: Tensor, labels: Tensor, quality: Tensor) -> dict[str, Tensor]:
    """Q, PY, NY for labels in 0..K (0 = negative row, c = positive at class c - 1)."""
    py = torch.nn.functional.one_hot(labels, x.shape[1] + 1)[:, 1:].to(DTYPE)
    return {"Q": py * quality[:, None], "PY": py, "NY": 1.0 - py}


@lru_cache(maxsize=16)
def validity_probe(branch: str, config: ProbeConfig) -> Probe:
    """Moderate random rows (the key reads these), label-swapped twins, then saturated extremes."""
    g = torch.Generator().manual_seed(config.seed)
    n, big = config.rows, config.extreme_logit
    if branch == "reg":
        return _reg_probe(g, n)
    classes = SOFTMAX_CLASSES if branch == "cls-softmax" else SIGMOID_CLASSES
    kinds = SOFTMAX_CLASSES if branch == "cls-softmax" else SIGMOID_CLASSES + 1
    x = torch.randn(n, classes, generator=g, dtype=DTYPE) * 2.5
    labels = torch.arange(n) % kinds
    quality = 0.2 + 0.8 * torch.rand(n, generator=g, dtype=DTYPE)
    if branch == "cls-softmax":
        # Twins keep X and Z and move a foreground label to another foreground class: only Y changes.
        fg = labels > 0
        twin_labels = labels[fg] % (kinds - 1) + 1
    else:
        fg = torch.ones(n, dtype=torch.bool)
        twin_labels = (labels + 1) % kinds
    twin_x, twin_q = x[fg], quality[fg]
    ext_x, ext_labels = [], []
    for label in range(kinds):
        for pattern in range(5):
            row = torch.full((classes,), -big, dtype=DTYPE)
            hot = label if branch == "cls-softmax" else max(label - 1, 0)
            if pattern == 0:
                row[hot] = big  # confident and right (for a negative row: confidently wrong)
            elif pattern == 1:
                row[(hot + 1) % classes] = big  # confident and wrong
            elif pattern == 2:
                row[:] = big
            elif pattern == 4:
                row[:] = 0.0
                row[hot] = big
            ext_x.append(row)
            ext_labels.append(label)
    ext = torch.stack(ext_x)
    all_x = torch.cat([x, twin_x, ext])
    all_labels = torch.cat([labels, twin_labels, torch.tensor(ext_labels)])
    all_q = torch.cat([quality, twin_q, torch.full((len(ext_x),), 0.5, dtype=DTYPE)])
    build = softmax_inputs if branch == "cls-softmax" else sigmoid_inputs
    fixed = build(all_x, all_labels, all_q)
    twins = (torch.nonzero(fg).squeeze(1), torch.arange(n, n + len(twin_x)))
    return Probe(branch, all_x, fixed, torch.arange(n + len(twin_x)), twins)


def _reg_probe(g: torch.Generator, n: int) -> Probe:
    centre = 20 + 180 * torch.rand(n, 2, generator=g, dtype=DTYPE)
    size = 8 + 88 * torch.rand(n, 2, generator=g, dtype=DTYPE)
    shift = torch.randn(n, 2, generator=g, dtype=DTYPE) * 0.3 * size
    shift[: n // 8] += 1.6 * size[: n // 8]  # some disjoint pairs
    scale = torch.exp(torch.randn(n, 2, generator=g, dtype=DTYPE) * 0.3)
    target = torch.cat([centre - size / 2, centre + size / 2], 1)
    pc, ps = centre + shift, size * scale
    pred = torch.cat([pc - ps / 2, pc + ps / 2], 1)
    # Edge boxes: tiny, huge, far apart, identical, nested, a zero-width prediction.
    edges = [
        ((10, 10, 10.25, 10.25), (10.05, 10.05, 10.3, 10.3)),
        ((0, 0, 5000, 4000), (100, 50, 5100, 4100)),
        ((0, 0, 5000, 5000), (10, 10, 12, 12)),
        ((10, 10, 12, 12), (0, 0, 5000, 5000)),
        ((0, 0, 10, 10), (9000, 9000, 9010, 9010)),
        ((0, 0, 0.25, 0.25), (3000, 0, 3100, 80)),
        ((30, 30, 70, 50), (30, 30, 70, 50)),
        ((50, 50, 50, 90), (40, 40, 80, 80)),
    ]
    edge_pred = torch.tensor([p for p, _ in edges], dtype=DTYPE)
    edge_target = torch.tensor([t for _, t in edges], dtype=DTYPE)
    return Probe(
        "reg",
        torch.cat([pred, edge_pred]),
        {"target": torch.cat([target, edge_target])},
        torch.arange(n),
    )
