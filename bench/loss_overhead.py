"""Forward+backward time of compiled named losses vs torchvision's hand-written ones, side by side.

    .venv/bin/python bench/loss_overhead.py [--repeats 30] [--threads 2]

Detection-sized tensors: 20,000 x 80 logits (focal) and 2,000 boxes (GIoU). The implementations are
timed interleaved, round by round, so machine noise hits all alike; the ratio is the figure to quote. The
"as written" rows compile the same expression without the codegen rewrites (autoloss.expr.rewrite), so
their ratio shows what the rewrites buy in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from autoloss import Loss
from autoloss.expr.codegen import compile_expr


def iue(pred, target, eps=1e-7):
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_p + area_t - inter
    enclose = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(1)
    return inter, union + eps, enclose + eps


def as_written(loss: Loss) -> Loss:
    """A copy of `loss` whose compiled function skips the rewrites (same call path, same input checks)."""
    plain = Loss(loss.expr, loss.branch, loss.name)
    plain.__dict__["fn"] = compile_expr(loss.expr, loss.inputs, optimize=False)  # fills the cached_property
    return plain


def timed(fn, x) -> float:
    x.grad = None
    start = time.perf_counter()
    fn().sum().backward()
    return time.perf_counter() - start


def compare(name, ours, plain, theirs, x, repeats):
    fns = (ours, plain, theirs)
    for _ in range(3):  # warm-up: allocator, first-call compilation
        for fn in fns:
            timed(fn, x)
    times: list[list[float]] = [[], [], []]
    for _ in range(repeats):
        for fn, t in zip(fns, times, strict=True):
            t.append(timed(fn, x))
    ma, mp, mb = (statistics.median(t) for t in times)
    print(f"| {name} | {ma * 1e3:.2f} | {mb * 1e3:.2f} | {ma / mb:.3f} |")
    print(f"| {name}, as written | {mp * 1e3:.2f} | {mb * 1e3:.2f} | {mp / mb:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)

    x = torch.randn(20_000, 80, generator=g).requires_grad_(True)
    y = (torch.rand(20_000, 80, generator=g) < 0.01).float()
    focal = Loss.named("focal")
    focal_plain = as_written(focal)
    alpha_t = 0.25 * y + 0.75 * (1 - y)

    xy = torch.rand(2_000, 2, generator=g) * 500
    target = torch.cat([xy, xy + torch.rand(2_000, 2, generator=g) * 100 + 1], 1)
    pred = (target + torch.randn(2_000, 4, generator=g) * 10).requires_grad_(True)
    giou = Loss.named("giou")
    giou_plain = as_written(giou)

    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print("| loss | autoloss compiled (ms) | torchvision (ms) | ratio |")
    print("|---|---|---|---|")
    compare(
        "focal, 20k x 80",
        lambda: alpha_t * focal(X=x, Q=y, PY=y, NY=1 - y),
        lambda: alpha_t * focal_plain(X=x, Q=y, PY=y, NY=1 - y),
        lambda: sigmoid_focal_loss(x, y, alpha=0.25, gamma=2, reduction="none"),
        x,
        args.repeats,
    )
    compare(
        "giou, 2k boxes",
        lambda: giou(**dict(zip("IUE", iue(pred, target), strict=True))),
        lambda: giou_plain(**dict(zip("IUE", iue(pred, target), strict=True))),
        lambda: generalized_box_iou_loss(pred, target, reduction="none", eps=1e-7),
        pred,
        args.repeats,
    )


if __name__ == "__main__":
    main()
