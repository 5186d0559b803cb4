"""`load_dataset`: one entry point from a spec ("shapes" or a COCO JSON path) to train/val splits."""

from __future__ import annotations

from pathlib import Path

from autoloss.data_specs import is_generated
from autoloss.detection.coco_json import load_images, read_coco_json, split_indices
from autoloss.detection.data import DataReport, DatasetError, DataSplit
from autoloss.detection.shapes import generate_shapes

SHAPES_IMAGE_SIZE = 128
# Real photos (BCCD 640x480, microcontrollers 800x600) keep objects of 10-100 px at 256 px.
COCO_IMAGE_SIZE = 256


def load_dataset(
    spec: str,
    images: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    *,
    train_size: int = 800,
    val_size: int = 200,
    val_fraction: float = 0.2,
) -> DataSplit:
    """Load `spec`: "shapes" / "shapes-dense" (generated; `train_size`/`val_size` images) or a path to a
    COCO instances JSON.

    For COCO, `images` is the folder the `file_name`s are relative to (default: the JSON's folder); the
    split follows the images' `split` field when it names both "train" and "val" images, else a split of
    `val_fraction` seeded by `seed`. Raises `DatasetError` for an unusable file, `ValueError` for bad
    arguments; skipped or repaired items are counted in the returned report and warned once.
    """
    if image_size is not None and image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if is_generated(spec):
        if images is not None:
            raise ValueError(f"--images applies to COCO JSON datasets, not to {spec!r}")
        if train_size < 1 or val_size < 1:
            raise ValueError(f"shapes needs train_size and val_size >= 1, got {train_size}/{val_size}")
        size = image_size or SHAPES_IMAGE_SIZE
        train = generate_shapes("train", train_size, size, seed, style=spec)
        val = generate_shapes("val", val_size, size, seed, style=spec)
        return DataSplit(train, val, train.class_names, DataReport())
    return _load_coco(spec, images, image_size or COCO_IMAGE_SIZE, seed, val_fraction)


def _load_coco(spec: str, images: str | None, image_size: int, seed: int, val_fraction: float) -> DataSplit:
    path = Path(spec)
    if not path.is_file():
        if path.suffix.lower() != ".json":
            raise DatasetError(spec, "unknown dataset: expected 'shapes' or a path to a COCO JSON file")
        raise DatasetError(spec, "file not found")
    root = Path(images) if images is not None else path.parent
    if not root.is_dir():
        raise DatasetError(str(root), "image folder not found")
    report = DataReport()
    source = read_coco_json(path, report)
    train_idx, val_idx = split_indices(source, seed, val_fraction)
    train = load_images(source, train_idx, root, image_size, report)
    val = load_images(source, val_idx, root, image_size, report)
    if len(train) == 0:
        raise DatasetError(spec, f"no readable training images under {root}")
    report.warn_once(spec)
    return DataSplit(train, val, source.class_names, report)
