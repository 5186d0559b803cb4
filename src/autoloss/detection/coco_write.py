"""`write_coco`: save a split as a COCO dataset on disk (an instances JSON and one image file per image).

It turns the generated shapes into the layout of a user's own data, so the COCO path (streaming, two
files, keep-aspect resizing) can be tried and benchmarked without a download: e.g. a 20,000-image
train JSON with its own image folder, and a val JSON beside it. `crop` gives every image its own aspect
ratio by cutting a random window out of the square one (boxes cut with it), as real photos have.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from autoloss.detection.data import DetectionData


def write_coco(
    data: DetectionData,
    json_path: str | Path,
    image_dir: str | Path,
    *,
    crop: bool = False,
    seed: int = 0,
    image_format: str = "png",
    first_id: int = 1,
) -> Path:
    """Write `data` as `json_path` plus images in `image_dir` (`file_name`s relative to it); returns the
    JSON path. Image ids start at `first_id`, so a train and a val file can have disjoint ids."""
    json_path, image_dir = Path(json_path), Path(image_dir)
    image_dir.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(len(data)):
        pixels, boxes = np.asarray(data.images[i]), np.asarray(data.boxes[i], np.float32).reshape(-1, 4)
        labels = np.asarray(data.labels[i])
        if crop:
            pixels, boxes, labels = _random_window(pixels, boxes, labels, rng)
        image_id = first_id + i
        name = f"{image_id:07d}.{image_format}"
        Image.fromarray(pixels).save(image_dir / name)
        height, width = pixels.shape[:2]
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [round(v, 2) for v in (box[0], box[1], w, h)],
                    "area": round(w * h, 2),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(data.class_names)]
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return json_path


def _random_window(
    pixels: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A window of 55-100 % of each side; boxes clipped to it, those left under 2 px dropped."""
    size = pixels.shape[0]
    w, h = (int(size * rng.uniform(0.55, 1.0)) for _ in range(2))
    x0, y0 = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
    cut = boxes - np.array([x0, y0, x0, y0], np.float32)
    cut[:, [0, 2]] = cut[:, [0, 2]].clip(0, w)
    cut[:, [1, 3]] = cut[:, [1, 3]].clip(0, h)
    keep = ((cut[:, 2] - cut[:, 0]) >= 2) & ((cut[:, 3] - cut[:, 1]) >= 2)
    return np.ascontiguousarray(pixels[y0 : y0 + h, x0 : x0 + w]), cut[keep], labels[keep]
