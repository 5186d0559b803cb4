"""COCO-format loader: an instances JSON plus an image folder, letterboxed into memory.

Bad items are skipped or repaired and counted in a `DataReport` (warned once); a file that cannot be used
at all raises `DatasetError` naming the file and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from autoloss.detection.data import DataReport, DatasetError, DetectionData, clean_boxes, letterbox

_VAL_NAMES = ("val", "valid", "validation")


@dataclass(frozen=True)
class CocoSource:
    """Parsed, validated annotations of one COCO JSON (no pixels yet)."""

    path: str
    class_names: tuple[str, ...]
    # (file_name, split or None, boxes xyxy in original pixels, labels 1..K) per image
    images: tuple[tuple[str, str | None, np.ndarray, np.ndarray], ...]


def read_coco_json(path: str | Path, report: DataReport) -> CocoSource:
    """Parse and validate `path`; category ids are remapped to 1..K in ascending id order."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(str(path), "file not found") from None
    except json.JSONDecodeError as err:
        raise DatasetError(
            str(path), f"malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(str(path), f"cannot read: {err}") from None
    if not isinstance(raw, dict):
        raise DatasetError(str(path), "top level must be an object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(raw.get(key), list):
            raise DatasetError(str(path), f"missing or non-list field '{key}'")

    categories = sorted(
        (_field(path, c, "id", "categories", int), _field(path, c, "name", "categories", str))
        for c in raw["categories"]
    )
    if not categories:
        raise DatasetError(str(path), "no categories")
    label_of = {cat_id: i + 1 for i, (cat_id, _) in enumerate(categories)}

    per_image: dict[int, list[tuple[list[float], int]]] = {}
    image_rows = []
    for img in raw["images"]:
        img_id = _field(path, img, "id", "images", int)
        image_rows.append((img_id, _field(path, img, "file_name", "images", str), img.get("split")))
        per_image[img_id] = []
    for ann in raw["annotations"]:
        img_id = _field(path, ann, "image_id", "annotations", int)
        cat_id = _field(path, ann, "category_id", "annotations", int)
        bbox = _field(path, ann, "bbox", "annotations", list)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
            raise DatasetError(str(path), f"annotation {ann.get('id')}: bbox must be 4 numbers, got {bbox!r}")
        if img_id not in per_image or cat_id not in label_of:
            report.note("annotations_orphaned", f"annotation {ann.get('id')} names an unknown image/category")
            continue
        if ann.get("iscrowd", 0):
            # crowd regions are ignore-areas in COCO eval; a detector cannot train on them as objects
            report.note("annotations_crowd_skipped", f"annotation {ann.get('id')} is a crowd region")
            continue
        x, y, w, h = (float(v) for v in bbox)
        per_image[img_id].append(([x, y, x + w, y + h], label_of[cat_id]))

    images = []
    for img_id, file_name, split in image_rows:
        anns = per_image[img_id]
        boxes = np.asarray([a[0] for a in anns], np.float32).reshape(-1, 4)
        labels = np.asarray([a[1] for a in anns], np.int64)
        images.append((file_name, split if isinstance(split, str) else None, boxes, labels))
    return CocoSource(str(path), tuple(name for _, name in categories), tuple(images))


def _field(path: Path, record: object, key: str, section: str, kind: type):
    if not isinstance(record, dict) or key not in record:
        raise DatasetError(str(path), f"an entry of '{section}' has no '{key}' field: {str(record)[:80]}")
    value = record[key]
    # bool is an int subclass; a JSON `true` id is still a malformed file
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DatasetError(
            str(path), f"'{section}' entry field '{key}' must be {kind.__name__}, got {value!r}"
        )
    return value


def split_indices(source: CocoSource, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Use the images' `split` field when it names both train and val images, else a seeded split."""
    splits = [s for _, s, _, _ in source.images]
    train = [i for i, s in enumerate(splits) if s == "train"]
    val = [i for i, s in enumerate(splits) if s in _VAL_NAMES]
    if train and val:
        return train, val
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(splits))
    n_val = max(1, round(len(splits) * val_fraction)) if len(splits) > 1 else 0
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def load_images(
    source: CocoSource, indices: list[int], image_root: Path, image_size: int, report: DataReport
) -> DetectionData:
    """Read, letterbox and clean the listed images; missing or unreadable files are skipped and counted."""
    arrays, boxes, labels = [], [], []
    for i in indices:
        file_name, _, raw_boxes, raw_labels = source.images[i]
        pixels = _read_letterboxed(str(image_root / file_name), image_size)
        if isinstance(pixels, str):
            report.note(pixels, f"{file_name}")
            continue
        array, scale, (width, height) = pixels
        clipped, keep = clean_boxes(raw_boxes, width, height, report, file_name)
        scaled = clipped[keep] * scale
        if len(scaled) == 0:
            report.images_without_boxes += 1
        arrays.append(array)
        boxes.append(scaled.astype(np.float32))
        labels.append(raw_labels[keep])
    stacked = np.stack(arrays) if arrays else np.zeros((0, image_size, image_size, 3), np.uint8)
    return DetectionData(stacked, tuple(boxes), tuple(labels), source.class_names)


@lru_cache(maxsize=2048)
def _read_letterboxed(path: str, size: int) -> tuple[np.ndarray, float, tuple[int, int]] | str:
    # Cached per (file, size): repeated proxy trainings on one dataset decode each JPEG once.
    try:
        with Image.open(path) as image:
            image.load()
            array, scale = letterbox(image, size)
            original = image.size
    except FileNotFoundError:
        return "images_missing"
    except (UnidentifiedImageError, OSError, ValueError):
        return "images_unreadable"
    array.flags.writeable = False
    return array, scale, original
