"""The fixed toy problems of model optimisation simulation (MOS), built once per config from its seed.

Classification looks like a detector's classification head in miniature: most samples are background,
a few are foreground of several classes, and every foreground sample has an IoU quality (Z / Q) that the
features reveal (samples near their class centre are "well localised"), so an IoU-aware loss can learn to
rank good boxes first. Regression is a set of target boxes of many sizes and aspect ratios with perturbed
starting boxes, some of them disjoint from their target.

Everything is drawn from a `torch.Generator`: the global RNG is never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from autoloss.checks.config import MOSConfig
from autoloss.checks.probes import DTYPE

MIN_QUALITY = (
    0.4  # the worst foreground IoU (Faster R-CNN takes foreground at IoU >= 0.5; decoded boxes vary)
)


@dataclass(frozen=True)
class ClsProblem:
    train_x: Tensor  # [n, features]
    train_labels: Tensor  # [n] in 0..K, 0 = background
    train_quality: Tensor  # [n] IoU of foreground samples (1 for background)
    test_x: Tensor
    test_labels: Tensor
    test_quality: Tensor
    init: tuple[Tensor, ...]  # the shared initial weights: w1 [f, h], b1 [h], w2 [h, K+1], b2 [K+1]


@dataclass(frozen=True)
class RegProblem:
    anchors: Tensor  # [n, 4] starting boxes, (cx, cy, w, h)
    targets: Tensor  # [n, 4] xyxy


def _samples(g: torch.Generator, n: int, centres: Tensor, config: MOSConfig) -> tuple[Tensor, Tensor, Tensor]:
    k, f = centres.shape
    fg = torch.rand(n, generator=g) >= config.cls_background
    labels = torch.where(fg, torch.randint(1, k + 1, (n,), generator=g), torch.zeros(n, dtype=torch.long))
    # Foreground: a centre plus an offset whose length sets the quality (far from the centre = poor box).
    offset = torch.rand(n, generator=g, dtype=DTYPE)
    direction = torch.randn(n, f, generator=g, dtype=DTYPE)
    direction = direction / direction.norm(dim=1, keepdim=True)
    noise = 0.3 * torch.randn(n, f, generator=g, dtype=DTYPE)
    fg_x = centres[(labels - 1).clamp(min=0)] + 2.0 * offset[:, None] * direction + noise
    quality = 1.0 - (1.0 - MIN_QUALITY) * offset
    # Background: a broad cloud that overlaps the classes (hard negatives exist, as in detection).
    bg_x = 1.8 * torch.randn(n, f, generator=g, dtype=DTYPE)
    x = torch.where(fg[:, None], fg_x, bg_x)
    return x, labels, torch.where(fg, quality, torch.ones_like(quality))


@lru_cache(maxsize=4)
def cls_problem(config: MOSConfig) -> ClsProblem:
    g = torch.Generator().manual_seed(config.seed)
    k, f, h = config.cls_classes, config.cls_features, config.cls_hidden
    centres = torch.randn(k, f, generator=g, dtype=DTYPE)
    centres = 3.0 * centres / centres.norm(dim=1, keepdim=True)
    train = _samples(g, config.cls_train, centres, config)
    test = _samples(g, config.cls_test, centres, config)
    init = (
        torch.randn(f, h, generator=g, dtype=DTYPE) / math.sqrt(f),
        torch.zeros(h, dtype=DTYPE),
        torch.randn(h, k + 1, generator=g, dtype=DTYPE) * 0.1 / math.sqrt(h),
        torch.zeros(k + 1, dtype=DTYPE),
    )
    return ClsProblem(*train, *test, init)


@lru_cache(maxsize=4)
def reg_problem(config: MOSConfig) -> RegProblem:
    g = torch.Generator().manual_seed(config.seed + 1)
    n = config.reg_boxes
    centre = 50 + 200 * torch.rand(n, 2, generator=g, dtype=DTYPE)
    size = torch.exp(math.log(8) + (math.log(128) - math.log(8)) * torch.rand(n, 2, generator=g, dtype=DTYPE))
    targets = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    start_size = size * torch.exp(0.35 * torch.randn(n, 2, generator=g, dtype=DTYPE))
    shift = 0.3 * size * torch.randn(n, 2, generator=g, dtype=DTYPE)
    # Disjoint starts: pushed sideways past the sum of the half-widths, at a random side and distance.
    disjoint = torch.arange(n) < round(config.reg_disjoint * n)
    side = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    gap = (size[:, 0] + start_size[:, 0]) / 2 * (1.1 + 0.6 * torch.rand(n, generator=g, dtype=DTYPE))
    shift[:, 0] = torch.where(disjoint, side * gap, shift[:, 0])
    anchors = torch.cat([centre + shift, start_size], dim=1)
    return RegProblem(anchors, targets)
