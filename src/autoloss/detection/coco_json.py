"""COCO instances JSON: parsed and validated into a columnar `CocoSource` (annotations only, no pixels).

Bad items are skipped or repaired and counted in a `DataReport`; a file that cannot be used at all raises
`DatasetError` naming the file and the problem. Crowd annotations are kept apart: a detector cannot train
on them as objects, but COCO evaluation needs them as ignore regions, so `records` returns them.

COCO train2017's JSON is 118k images and 860k annotations, most of its 450 MB polygons that no detector
here reads. Each annotation is therefore cut down to what training and COCO box evaluation read (bbox,
area, iscrowd, category) the moment the JSON parser has built it, so the polygons never accumulate, and the
result is a handful of flat arrays (one row per image, one per annotation) rather than a million dicts:
small enough to save once per machine and memory-map in every worker (`coco_cache`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.detection.data import DataReport, DatasetError

_VAL_NAMES = ("val", "valid", "validation")
_TEST_NAMES = ("test", "testing")


@dataclass(frozen=True)
class CocoImage:
    """One image entry: its JSON id, file and split, and its non-crowd boxes in original pixels."""

    image_id: int
    file_name: str
    split: str | None
    boxes: np.ndarray  # float32 [n,4] xyxy, original pixels, non-crowd
    labels: np.ndarray  # int64 [n] in 1..K


@dataclass(frozen=True)
class ParseCounts:
    """What parsing skipped or set apart, replayed into a `DataReport` each time the source is loaded."""

    annotations_crowd: int = 0
    annotations_orphaned: int = 0
    examples: tuple[str, ...] = ()

    def replay(self, report: DataReport) -> None:
        report.annotations_crowd += self.annotations_crowd
        for example in self.examples:
            report.note("annotations_orphaned", example)
        report.annotations_orphaned += self.annotations_orphaned - len(self.examples)


@dataclass(frozen=True, eq=False)
class CocoSource:
    """Parsed, validated annotations of one COCO JSON, as columns.

    Image i is row i of the image columns; its annotations (file order, crowd included) are rows
    `ann_start[i]:ann_start[i + 1]` of the annotation columns. The arrays may be read-only memory maps.
    """

    path: str
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]  # the JSON's category id of label i+1
    split_names: tuple[str, ...]  # the distinct `split` values; `split_codes` index them, -1 for none
    image_ids: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [N,2] (width, height) as the JSON states them; 0 where it does not
    split_codes: np.ndarray  # int64 [N]
    name_offsets: np.ndarray  # int64 [N+1]: file name i is name_bytes[name_offsets[i]:name_offsets[i+1]]
    name_bytes: np.ndarray  # uint8, the UTF-8 file names end to end
    ann_start: np.ndarray  # int64 [N+1]
    bbox: np.ndarray  # float64 [M,4] COCO xywh, original pixels
    area: np.ndarray  # float64 [M], NaN where the record states none
    iscrowd: np.ndarray  # bool [M]
    label: np.ndarray  # int64 [M] in 1..K
    counts: ParseCounts = field(default_factory=ParseCounts)

    def __len__(self) -> int:
        return len(self.image_ids)

    def same_classes(self, other: CocoSource) -> bool:
        return (self.class_names, self.category_ids) == (other.class_names, other.category_ids)

    def file_name(self, i: int) -> str:
        start, end = self.name_offsets[i], self.name_offsets[i + 1]
        return bytes(self.name_bytes[start:end]).decode("utf-8")

    def split(self, i: int) -> str | None:
        code = int(self.split_codes[i])
        return self.split_names[code] if code >= 0 else None

    def _objects(self, i: int) -> slice:
        return slice(int(self.ann_start[i]), int(self.ann_start[i + 1]))

    def boxes(self, i: int) -> np.ndarray:
        """Image i's non-crowd boxes, float32 xyxy in original pixels (corners summed in float64)."""
        rows = self._objects(i)
        xywh = np.asarray(self.bbox[rows])[~self.iscrowd[rows]]
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return xyxy.astype(np.float32).reshape(-1, 4)

    def labels(self, i: int) -> np.ndarray:
        """Image i's non-crowd labels, int64 in 1..K."""
        rows = self._objects(i)
        return np.asarray(self.label[rows])[~self.iscrowd[rows]].astype(np.int64)

    def records(self, i: int) -> list[dict[str, Any]]:
        """Image i's annotations as COCO evaluation reads them (crowd regions included, original pixels;
        the stated area, which is the mask's where the dataset has one, else the box's)."""
        out = []
        for r in range(*self._objects(i).indices(len(self.label))):
            x, y, w, h = (float(v) for v in self.bbox[r])
            area = float(self.area[r])
            out.append(
                {
                    "category_id": self.category_ids[int(self.label[r]) - 1],
                    "bbox": [x, y, w, h],
                    "area": w * h if np.isnan(area) else area,
                    "iscrowd": int(self.iscrowd[r]),
                }
            )
        return out

    def image_labels(self) -> list[np.ndarray]:
        """Every image's non-crowd labels (what the class-stratified splits deal by)."""
        keep = ~np.asarray(self.iscrowd)
        image_of = np.repeat(np.arange(len(self)), np.diff(self.ann_start))[keep]
        starts = np.concatenate([[0], np.cumsum(np.bincount(image_of, minlength=len(self)))])
        labels = np.asarray(self.label)[keep]
        return [labels[starts[i] : starts[i + 1]] for i in range(len(self))]

    @property
    def images(self) -> _Images:
        """`images[i]` as a `CocoImage`, built on demand."""
        return _Images(self)


class _Images(Sequence[CocoImage]):
    def __init__(self, source: CocoSource) -> None:
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        s = self._source
        return CocoImage(int(s.image_ids[i]), s.file_name(i), s.split(i), s.boxes(i), s.labels(i))

    def __iter__(self) -> Iterator[CocoImage]:
        return (self[i] for i in range(len(self)))


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
    category_ids = np.asarray([c for c, _ in categories], np.int64)
    if len(np.unique(category_ids)) != len(category_ids):
        raise DatasetError(str(path), "two categories share one id")

    images = raw.pop("images")
    image_ids = np.fromiter((_field(path, img, "id", "images", int) for img in images), np.int64, len(images))
    names = [_field(path, img, "file_name", "images", str).encode("utf-8") for img in images]
    sizes = np.asarray([_stated_size(img) for img in images], np.int64).reshape(-1, 2)
    split_values = [s if isinstance(s := img.get("split"), str) else None for img in images]
    del images
    split_names = tuple(sorted({s for s in split_values if s is not None}))
    code_of = {name: i for i, name in enumerate(split_names)}
    split_codes = np.asarray([code_of.get(s, -1) for s in split_values], np.int64)
    by_id = np.argsort(image_ids, kind="stable")
    dup = np.flatnonzero(np.diff(image_ids[by_id]) == 0)
    if len(dup):
        raise DatasetError(str(path), f"image id {int(image_ids[by_id[dup[0]]])} is given to two images")

    rows = [a if isinstance(a, tuple) else _annotation(path, a) for a in raw.pop("annotations")]
    n = len(rows)
    ann_id = [r[0] for r in rows]
    image_of = _positions(np.fromiter((r[1] for r in rows), np.int64, n), image_ids, by_id)
    label = _positions(
        np.fromiter((r[2] for r in rows), np.int64, n), category_ids, np.arange(len(categories))
    )
    bbox = np.asarray([r[3] for r in rows], np.float64).reshape(-1, 4)
    area = np.fromiter((np.nan if r[4] is None else r[4] for r in rows), np.float64, n)
    iscrowd = np.fromiter((r[5] for r in rows), bool, n)
    del rows
    orphaned = np.flatnonzero((image_of < 0) | (label < 0))
    examples = tuple(f"annotation {ann_id[i]} names an unknown image/category" for i in orphaned[:5].tolist())
    kept = np.flatnonzero((image_of >= 0) & (label >= 0))
    # grouped by image, each image's annotations in file order
    kept = kept[np.argsort(image_of[kept], kind="stable")]
    counts = ParseCounts(int(iscrowd[kept].sum()), len(orphaned), examples)
    counts.replay(report)
    return CocoSource(
        path=str(path),
        class_names=tuple(name for _, name in categories),
        category_ids=tuple(int(c) for c in category_ids),
        split_names=split_names,
        image_ids=image_ids,
        sizes=sizes,
        split_codes=split_codes,
        name_offsets=np.concatenate([[0], np.cumsum([len(b) for b in names], dtype=np.int64)]),
        name_bytes=np.frombuffer(b"".join(names), np.uint8),
        ann_start=np.concatenate(
            [[0], np.cumsum(np.bincount(image_of[kept], minlength=len(image_ids)), dtype=np.int64)]
        ),
        bbox=bbox[kept],
        area=area[kept],
        iscrowd=iscrowd[kept],
        label=label[kept] + 1,
        counts=counts,
    )


def _positions(values: np.ndarray, table: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The row of `table` holding each value (`order` sorts `table`), -1 where none does."""
    ranked = table[order]
    at = np.searchsorted(ranked, values).clip(0, max(len(ranked) - 1, 0))
    found = (ranked[at] == values) if len(ranked) else np.zeros(len(values), bool)
    return np.where(found, order[at] if len(ranked) else -1, -1)


def _stated_size(img: dict[str, Any]) -> tuple[int, int]:
    """(width, height) as the image entry states them, (0, 0) where it does not state both usably."""
    width, height = img.get("width"), img.get("height")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 for v in (width, height))
    return (round(width), round(height)) if ok else (0, 0)


# (id, image_id, category_id, [x, y, w, h], area or None, iscrowd): what training and COCO box
# evaluation read of an annotation record.
_Annotation = tuple[Any, int, int, list[float], float | None, bool]


def _annotation(path: Path, ann: dict[str, Any]) -> _Annotation:
    img_id = _field(path, ann, "image_id", "annotations", int)
    cat_id = _field(path, ann, "category_id", "annotations", int)
    bbox = _field(path, ann, "bbox", "annotations", list)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        raise DatasetError(str(path), f"annotation {ann.get('id')}: bbox must be 4 numbers, got {bbox!r}")
    area = ann.get("area")
    area = float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) else None
    return ann.get("id"), img_id, cat_id, [float(v) for v in bbox], area, bool(ann.get("iscrowd", 0))


def _read_json(path: Path) -> dict[str, Any]:
    def compact(record: dict[str, Any]) -> Any:
        # Called on every object as soon as it is parsed, innermost first: an annotation becomes a small
        # tuple here, so its polygons are freed at once instead of living until the whole file is read.
        if "image_id" in record and "bbox" in record and "category_id" in record:
            return _annotation(path, record)
        return record

    try:
        # decoded before parsing, so the file's bytes are freed before the parse builds its objects
        raw = json.loads(path.read_bytes().decode("utf-8"), object_hook=compact)
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
    splits = [source.split(i) for i in range(len(source))]
    train = [i for i, s in enumerate(splits) if s == "train"]
    val = [i for i, s in enumerate(splits) if s in _VAL_NAMES]
    test = [i for i, s in enumerate(splits) if s in _TEST_NAMES]
    if train and len(val) >= MIN_EVAL_IMAGES and len(test) >= MIN_EVAL_IMAGES:
        return SplitPlan(train, val, test, "upstream train/val/test")
    counts = f"{len(train)}/{len(val)}/{len(test)}"
    why = "no split field" if not any(splits) else f"upstream train/val/test {counts}"
    f = eval_fraction(len(splits))
    tr, va, te = stratified_split(source.image_labels(), seed, (1 - 2 * f, f, f))
    return SplitPlan(tr, va, te, f"class-stratified re-split, seed {seed} ({why})")


def carve_val(source: CocoSource, seed: int) -> tuple[list[int], list[int]]:
    """(train, search-val) carved from one file's images: COCO's two-file layout keeps its second file for
    test, so search-val comes out of the training file (seeded, class-stratified)."""
    f = eval_fraction(len(source))
    train, val = stratified_split(source.image_labels(), seed, (1 - f, f))
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
