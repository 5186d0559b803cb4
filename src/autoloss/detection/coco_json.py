"""COCO instances JSON: parsed and validated into a `CocoSource` (annotations only, no pixels).

Bad items are skipped or repaired and counted in a `DataReport`; a file that cannot be used at all raises
`DatasetError` naming the file and the problem. Crowd annotations are kept apart: a detector cannot train
on them as objects, but COCO evaluation needs them as ignore regions, so `ground_truth` returns them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.detection.data import DataReport, DatasetError

_VAL_NAMES = ("val", "valid", "validation")
_TEST_NAMES = ("test", "testing")


@dataclass(frozen=True)
class CocoImage:
    """One image entry: its JSON id and file, and its annotations in original pixels."""

    image_id: int
    file_name: str
    split: str | None
    boxes: np.ndarray  # float32 [n,4] xyxy, original pixels, non-crowd
    labels: np.ndarray  # int64 [n] in 1..K
    annotations: tuple[dict[str, Any], ...]  # the raw records (crowd included) for evaluation


@dataclass(frozen=True)
class CocoSource:
    """Parsed, validated annotations of one COCO JSON."""

    path: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]  # the JSON's category id of label i+1
    images: tuple[CocoImage, ...]

    def same_classes(self, other: CocoSource) -> bool:
        return (self.class_names, self.category_ids) == (other.class_names, other.category_ids)


def read_coco_json(path: str | Path, report: DataReport) -> CocoSource:
    """Parse and validate `path`; category ids are remapped to labels 1..K in ascending id order."""
    path = Path(path)
    raw = _read_json(path)
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

    per_image: dict[int, list[dict[str, Any]]] = {}
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
            report.annotations_crowd += 1
        per_image[img_id].append(ann)

    images = []
    for img_id, file_name, split in image_rows:
        anns = tuple(per_image[img_id])
        objects = [a for a in anns if not a.get("iscrowd", 0)]
        boxes = np.asarray([_xyxy(a["bbox"]) for a in objects], np.float32).reshape(-1, 4)
        labels = np.asarray([label_of[a["category_id"]] for a in objects], np.int64)
        split = split if isinstance(split, str) else None
        images.append(CocoImage(img_id, file_name, split, boxes, labels, anns))
    return CocoSource(
        str(path), tuple(name for _, name in categories), tuple(c for c, _ in categories), tuple(images)
    )


def _read_json(path: Path) -> dict[str, Any]:
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
    return raw


def _xyxy(bbox: list[float]) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    return [x, y, x + w, y + h]


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


# An evaluation split smaller than this gives AP too noisy to select or report on: the upstream split is
# used only where search-val and test both reach it, else the images are re-split.
MIN_EVAL_IMAGES = 40
# Each evaluation split's share of a re-split (raised towards MIN_EVAL_IMAGES for small sets, at most 1/4).
EVAL_FRACTION = 0.2


@dataclass(frozen=True)
class SplitPlan:
    """Image indices of train, search-val and test, and how they were made (stated in every run)."""

    train: list[int]
    val: list[int]
    test: list[int]
    method: str


def eval_fraction(n_images: int) -> float:
    """The share of `n_images` each evaluation split gets in a re-split."""
    return max(EVAL_FRACTION, min(MIN_EVAL_IMAGES / max(n_images, 1), 0.25))


def three_way_split(source: CocoSource, seed: int) -> SplitPlan:
    """train / search-val / test of one COCO file: its images' `split` field where it names train, val and
    test images and both evaluation splits hold >= MIN_EVAL_IMAGES; otherwise a seeded, class-stratified
    re-split of all its images (`stratified_split`)."""
    splits = [image.split for image in source.images]
    train = [i for i, s in enumerate(splits) if s == "train"]
    val = [i for i, s in enumerate(splits) if s in _VAL_NAMES]
    test = [i for i, s in enumerate(splits) if s in _TEST_NAMES]
    if train and len(val) >= MIN_EVAL_IMAGES and len(test) >= MIN_EVAL_IMAGES:
        return SplitPlan(train, val, test, "upstream train/val/test")
    counts = f"{len(train)}/{len(val)}/{len(test)}"
    why = "no split field" if not any(splits) else f"upstream train/val/test {counts}"
    f = eval_fraction(len(splits))
    tr, va, te = stratified_split([image.labels for image in source.images], seed, (1 - 2 * f, f, f))
    return SplitPlan(tr, va, te, f"class-stratified re-split, seed {seed} ({why})")


def carve_val(source: CocoSource, seed: int) -> tuple[list[int], list[int]]:
    """(train, search-val) carved from one file's images: COCO's two-file layout keeps its second file for
    test, so search-val comes out of the training file (seeded, class-stratified)."""
    f = eval_fraction(len(source.images))
    train, val = stratified_split([image.labels for image in source.images], seed, (1 - f, f))
    return train, val


def stratified_split(
    labels: list[np.ndarray], seed: int, fractions: tuple[float, ...]
) -> tuple[list[int], ...]:
    """Indices 0..n-1 dealt into len(fractions) sorted lists of those shares, seeded by `seed`.

    Stratified by each image's rarest class (images without boxes form their own group), so a rare class
    reaches every split: groups are shuffled and laid end to end, then dealt by largest accumulated
    credit, which keeps every group's and every split's count within one image of its share.
    """
    totals: dict[int, int] = {}
    for lab in labels:
        for c in lab.tolist():
            totals[c] = totals.get(c, 0) + 1
    groups: dict[tuple[int, int], list[int]] = {}
    for i, lab in enumerate(labels):
        key = min(((totals[c], c) for c in set(lab.tolist())), default=(0, 0))
        groups.setdefault(key, []).append(i)
    rng = np.random.default_rng([seed, 0x3517])
    order = [i for key in sorted(groups) for i in rng.permutation(groups[key]).tolist()]
    share = np.asarray(fractions, dtype=np.float64)
    credit = np.zeros_like(share)
    out: list[list[int]] = [[] for _ in fractions]
    for i in order:
        credit += share
        s = int(np.argmax(credit))
        credit[s] -= 1.0
        out[s].append(i)
    return tuple(sorted(o) for o in out)


def subset_indices(indices: list[int], size: int | None, seed: int) -> list[int]:
    """`size` of `indices` drawn at random (seeded), in their original order; all of them if None or more.

    The paper's 10k training images sampled from COCO train2017 are `subset_indices(train, 10000, seed)`.
    """
    if size is None or size >= len(indices):
        return list(indices)
    if size < 1:
        raise ValueError(f"train subset must be >= 1 image, got {size}")
    # A generator of its own (not the split's): the subset of a two-file dataset depends only on the seed.
    pick = np.random.default_rng([seed, 0x5B5E7]).choice(len(indices), size, replace=False)
    return [indices[i] for i in sorted(pick.tolist())]
