"""`shapes`: the built-in generated detection dataset (no download, deterministic from a seed).

Five classes (circle, square, triangle, cross, ring) of random colour, size, aspect and position on a noisy
gradient background with clutter lines; 1-6 objects per image that may overlap a little (`shapes-dense`:
3-12 smaller ones). Each image is drawn
from its own generator keyed by (seed, split, index), so a smaller dataset is a prefix of a larger one and
the validation images do not depend on the training size.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from autoloss.detection.data import DetectionData

SHAPE_CLASSES = ("circle", "square", "triangle", "cross", "ring")
_SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
# Object sizes are specified for 128 px images (the design's proxy) and scale with the image size.
_REF_SIZE = 128
_MAX_OVERLAP_IOU = 0.4


@dataclass(frozen=True)
class ShapesStyle:
    """How many objects an image holds and how large they are (long side in px at 128 px)."""

    min_side: float
    max_side: float
    min_objects: int
    max_objects: int
    log_sizes: bool  # log-uniform sides: many small objects and a few large ones, as in COCO


# "shapes": 1-6 objects of 10-60 px, uniform — large objects cover much of a 128 px image, so most anchor
# points are foreground-adjacent and there is little foreground/background imbalance.
# "shapes-dense": 3-12 objects of 6-40 px, log-uniform — a smaller share of positive locations per image
# and a wider range of scales, closer to COCO's imbalance at the same image size and cost.
SHAPES_STYLES = {
    "shapes": ShapesStyle(10.0, 60.0, 1, 6, log_sizes=False),
    "shapes-dense": ShapesStyle(6.0, 40.0, 3, 12, log_sizes=True),
}


def generate_shapes(
    split: str, count: int, image_size: int = 128, seed: int = 0, style: str = "shapes"
) -> DetectionData:
    """Return `count` generated images of `split` ("train", "val" or "test") in `style` (a key of
    SHAPES_STYLES); results are cached and read-only."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be 'train', 'val' or 'test', not {split!r}")
    if style not in SHAPES_STYLES:
        raise ValueError(f"unknown shapes style {style!r}; styles: {', '.join(SHAPES_STYLES)}")
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    return _generate_cached(split, count, image_size, seed, style)


@lru_cache(maxsize=16)
def _generate_cached(split: str, count: int, image_size: int, seed: int, style: str) -> DetectionData:
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    boxes, labels = [], []
    look = SHAPES_STYLES[style]
    for i in range(count):
        # The original style keeps its generator key, so "shapes" images are what they always were.
        key = [seed, _SPLIT_CODE[split], i] if style == "shapes" else [seed, _SPLIT_CODE[split], i, 1]
        rng = np.random.default_rng(key)
        images[i], b, lab = _draw_image(rng, image_size, look)
        b.flags.writeable = False
        lab.flags.writeable = False
        boxes.append(b)
        labels.append(lab)
    images.flags.writeable = False  # the cache hands out the same arrays to every caller
    return DetectionData(images=images, boxes=tuple(boxes), labels=tuple(labels), class_names=SHAPE_CLASSES)


def _draw_image(
    rng: np.random.Generator, size: int, look: ShapesStyle
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    background = _background(rng, size)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):  # clutter lines: edges that are not objects
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([(x0, y0), (x1, y1)], fill=_colour(rng), width=int(rng.integers(1, 3)))
    base = background.reshape(-1, 3).mean(0)
    boxes: list[list[float]] = []
    labels: list[int] = []
    for _ in range(int(rng.integers(look.min_objects, look.max_objects + 1))):
        box = _place(rng, size, boxes, look)
        if box is None:
            continue
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        _draw_shape(draw, rng, cls, box, _contrasting_colour(rng, base))
        boxes.append(box)
        labels.append(cls + 1)
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.normal(0.0, rng.uniform(3.0, 12.0), pixels.shape).astype(np.float32)
    out = pixels.clip(0, 255).astype(np.uint8)
    return out, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    t = ramp[None, :, None] if rng.random() < 0.5 else ramp[:, None, None]
    grad = start + (end - start) * t * 0.5  # a gentle gradient, so no object colour is fully hidden
    return np.broadcast_to(grad, (size, size, 3)).clip(0, 255).astype(np.uint8)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = rng.integers(0, 256, 3)
    return int(r), int(g), int(b)


def _contrasting_colour(rng: np.random.Generator, base: np.ndarray) -> tuple[int, int, int]:
    colour = _colour(rng)
    for _ in range(10):  # bounded retries: a low-contrast object now and then is fine
        if np.abs(np.asarray(colour) - base).sum() > 120:
            break
        colour = _colour(rng)
    return colour


def _place(
    rng: np.random.Generator, size: int, taken: list[list[float]], look: ShapesStyle
) -> list[float] | None:
    scale = size / _REF_SIZE
    for _ in range(20):
        if look.log_sizes:
            side = float(np.exp(rng.uniform(np.log(look.min_side), np.log(look.max_side))))
        else:
            side = rng.uniform(look.min_side, look.max_side)
        long_side = side * scale
        aspect = rng.uniform(0.6, 1.0)
        w, h = (long_side, long_side * aspect) if rng.random() < 0.5 else (long_side * aspect, long_side)
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        if all(_iou(box, other) <= _MAX_OVERLAP_IOU for other in taken):
            return box
    return None


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def _draw_shape(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, cls: int, box: list[float], colour: tuple
) -> None:
    x0, y0, x1, y1 = box
    name = SHAPE_CLASSES[cls]
    thin = max(2.0, 0.25 * min(x1 - x0, y1 - y0))
    if name == "circle":
        draw.ellipse(box, fill=colour)
    elif name == "square":
        draw.rectangle(box, fill=colour)
    elif name == "triangle":
        cx = (x0 + x1) / 2
        points = [(x0, y1), (x1, y1), (cx, y0)] if rng.random() < 0.5 else [(x0, y0), (x1, y0), (cx, y1)]
        draw.polygon(points, fill=colour)
    elif name == "cross":
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.rectangle([x0, cy - thin / 2, x1, cy + thin / 2], fill=colour)
        draw.rectangle([cx - thin / 2, y0, cx + thin / 2, y1], fill=colour)
    else:  # ring
        draw.ellipse(box, outline=colour, width=max(2, round(thin * 0.8)))
