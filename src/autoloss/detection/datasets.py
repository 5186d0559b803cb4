"""`load_dataset`: one entry point from a spec ("shapes", a built-in real set, or COCO JSON files) to the
train / search-val / test splits."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from autoloss.data_specs import annotation_file, data_names, is_builtin, is_generated
from autoloss.detection.coco_cache import load_coco
from autoloss.detection.coco_images import DEFAULT_CACHE_MB, CocoImages, ImageCache
from autoloss.detection.coco_json import carve_val, subset_indices, three_way_split
from autoloss.detection.data import RESIZE_MODES, DataReport, DatasetError, DataSplit, Resize
from autoloss.detection.shapes import generate_shapes

SHAPES_IMAGE_SIZE = 128
# Real photos (BCCD 640x480, microcontrollers 800x600) keep objects of 10-100 px at 256 px.
COCO_IMAGE_SIZE = 256
# torchvision's detection defaults for COCO photos (GeneralizedRCNNTransform min_size/max_size).
KEEP_ASPECT_SIZES = (800, 1333)


def load_dataset(
    spec: str,
    images: str | None = None,
    image_size: int | None = None,
    seed: int = 0,
    *,
    train_size: int = 800,
    val_size: int = 200,
    val_spec: str | None = None,
    val_images: str | None = None,
    train_subset: int | None = None,
    resize: str = "letterbox",
    min_size: int | None = None,
    max_size: int | None = None,
    cache_mb: float = DEFAULT_CACHE_MB,
) -> DataSplit:
    """Load `spec`: "shapes" / "shapes-dense" (generated; `train_size` training images, `val_size` each
    for search-val and test), a built-in real set by name (`autoloss data list`) or a path to a COCO
    instances JSON.

    COCO, one file: `images` is the folder the `file_name`s are relative to (default: the JSON's folder);
    the images' `split` field gives train / search-val / test where it names all three and each evaluation
    split has at least 40 images, else all images are re-split (seeded by `seed`, class-stratified; see
    `coco_json.three_way_split`). COCO, two files (COCO's own train2017/val2017 layout): `spec` is the
    training JSON, from which search-val is carved (seeded, stratified), and `val_spec` the held-out one,
    which becomes test; `images` / `val_images` are their folders. `train_subset` keeps that many training
    images drawn at random (seeded). An image file whose bytes appear in two splits is an error. Images
    are read from disk as training needs them (`cache_mb` of decoded images are kept), resized by
    `resize`: "letterbox" to `image_size` squares (default 256), or "keep-aspect" with
    `min_size`/`max_size` (default 800/1333).

    Raises `DatasetError` for an unusable file, `ValueError` for bad arguments; skipped or repaired items
    are counted in the returned report and warned once.
    """
    if image_size is not None and image_size < 32:
        raise ValueError(f"image_size must be >= 32 pixels, got {image_size}")
    if is_generated(spec):
        for name, value in (("--images", images), ("--val-data", val_spec), ("--val-images", val_images)):
            if value is not None:
                raise ValueError(f"{name} applies to COCO JSON datasets, not to {spec!r}")
        if resize != "letterbox":
            raise ValueError(f"{spec!r} images are generated square; resize must be 'letterbox'")
        if train_size < 1 or val_size < 1:
            raise ValueError(f"shapes needs train_size and val_size >= 1, got {train_size}/{val_size}")
        size = image_size or SHAPES_IMAGE_SIZE
        train = generate_shapes("train", train_size, size, seed, style=spec)
        if train_subset is not None:
            train = train.subset(subset_indices(list(range(len(train))), train_subset, seed))
        val = generate_shapes("val", val_size, size, seed, style=spec)
        test = generate_shapes("test", val_size, size, seed, style=spec)
        method = f"generated: {train_size} train, {val_size} search-val, {val_size} test images (seed {seed})"
        return DataSplit(train, val, test, train.class_names, DataReport(), method)
    shape = _resize(resize, image_size, min_size, max_size)
    return _load_coco(spec, images, val_spec, val_images, shape, seed, train_subset, cache_mb)


def _resize(mode: str, image_size: int | None, min_size: int | None, max_size: int | None) -> Resize:
    if mode == "letterbox":
        if min_size is not None or max_size is not None:
            raise ValueError("min_size/max_size apply to resize 'keep-aspect'; letterbox uses image_size")
        return Resize("letterbox", size=image_size or COCO_IMAGE_SIZE)
    if mode == "keep-aspect":
        low = min_size or KEEP_ASPECT_SIZES[0]
        high = max_size or max(low, KEEP_ASPECT_SIZES[1])
        if low < 32 or high < low:
            raise ValueError(f"keep-aspect needs 32 <= min_size <= max_size, got {low}/{high}")
        return Resize("keep-aspect", min_size=low, max_size=high)
    raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {mode!r}")


def json_path(spec: str) -> Path:
    path = Path(annotation_file(spec))
    if not path.is_file():
        if is_builtin(spec):
            raise DatasetError(str(path), f"built-in dataset {spec!r} is missing from this installation")
        if path.suffix.lower() != ".json":
            raise DatasetError(spec, f"unknown dataset: expected one of {data_names()} or a COCO JSON file")
        raise DatasetError(spec, "file not found")
    return path


def _folder(images: str | None, json_path: Path) -> Path:
    root = Path(images) if images is not None else json_path.parent
    if not root.is_dir():
        raise DatasetError(str(root), "image folder not found")
    return root


def _load_coco(
    spec: str,
    images: str | None,
    val_spec: str | None,
    val_images: str | None,
    resize: Resize,
    seed: int,
    train_subset: int | None,
    cache_mb: float,
) -> DataSplit:
    path = json_path(spec)
    root = _folder(images, path)
    report = DataReport()
    source = load_coco(path, report)
    if val_spec is None:
        if val_images is not None:
            raise ValueError("--val-images needs --val-data (the held-out JSON)")
        plan = three_way_split(source, seed)
        train_idx, val_idx, test_idx, method = plan.train, plan.val, plan.test, plan.method
        test_source, test_root = source, root
    else:
        test_path = json_path(val_spec)
        test_root = _folder(val_images, test_path)
        test_source = load_coco(test_path, report)
        if not test_source.same_classes(source):
            theirs = list(zip(test_source.category_ids, test_source.class_names, strict=True))
            ours = list(zip(source.category_ids, source.class_names, strict=True))
            raise DatasetError(val_spec, f"its categories {theirs} differ from the training file's {ours}")
        train_idx, val_idx = carve_val(source, seed)
        test_idx = list(range(len(test_source)))
        method = (
            f"two files: search-val carved from the training file (class-stratified, seed {seed}); "
            f"test is {val_spec}"
        )
    train_idx = subset_indices(train_idx, train_subset, seed)
    cache = ImageCache(cache_mb)  # one budget for all splits
    train = CocoImages(source, train_idx, root, resize, report, cache)
    val = CocoImages(source, val_idx, root, resize, report, cache)
    test = CocoImages(test_source, test_idx, test_root, resize, report, cache)
    if len(train) == 0:
        raise DatasetError(spec, f"no readable training images under {root}")
    for name, split in (("search-val", val), ("test", test)):
        if len(split) == 0:
            raise DatasetError(spec, f"the {name} split has no readable images ({method})")
    check_disjoint({"train": train.paths, "search-val": val.paths, "test": test.paths})
    report.warn_once(spec)
    return DataSplit(train, val, test, source.class_names, report, method)


def check_disjoint(paths: dict[str, list[str]]) -> None:
    """Raise `DatasetError` naming an image whose bytes are in two splits: AP on a split that shares
    images with training or selection is not held out. Files are hashed only where sizes collide."""
    by_size: dict[int, list[tuple[str, str]]] = {}
    for split, files in paths.items():
        for f in dict.fromkeys(files):
            by_size.setdefault(os.path.getsize(f), []).append((split, f))
    for group in by_size.values():
        if len({split for split, _ in group}) < 2:
            continue
        seen: dict[str, tuple[str, str]] = {}
        for split, f in group:
            digest = hashlib.sha256(Path(f).read_bytes()).hexdigest()
            first = seen.setdefault(digest, (split, f))
            if first[0] != split:
                raise DatasetError(
                    f, f"the same image is in the {first[0]} split ({first[1]}) and the {split} split"
                )
