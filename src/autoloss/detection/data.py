"""Detection data: the split interface training and evaluation read, the in-memory split, the bad-data
report and its error.

A split has `len`, `class_names`, per-image `boxes` and `labels` (xyxy pixels in the frame the detector
sees; labels 1..K, torchvision's convention: 0 is background), `image(i)` (uint8 [H,W,3]), `resize` (how
images reach that frame) and `ground_truth()` / `to_original()` for COCO evaluation in the images' own
coordinates. `DetectionData` holds generated images in memory (they are born in the detector's frame);
`coco_images.CocoImages` reads photos from disk as they are needed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from autoloss.errors import AutolossError

# Padding colour of letterboxed images: roughly the ImageNet mean the detectors normalise with,
# so padding looks like "nothing" to a freshly initialised network.
PAD_RGB = (124, 116, 104)


RESIZE_MODES = ("letterbox", "keep-aspect")
# train: trainings; val: search-val, every selection; test: the final table, never selected on.
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class Resize:
    """How images reach the detector's frame.

    "letterbox": the long side to `size`, padded bottom/right to a square (the tiny CPU proxies: a batch is
    a plain stack). "keep-aspect": the short side to `min_size` unless the long side would pass
    `max_size` (torchvision's GeneralizedRCNNTransform convention for real photos; batches are padded by
    the detector's transform).
    """

    mode: str
    size: int = 0
    min_size: int = 0
    max_size: int = 0

    def scale(self, width: int, height: int) -> float:
        if self.mode == "letterbox":
            return self.size / max(width, height)
        return min(self.min_size / min(width, height), self.max_size / max(width, height))

    def detector_sizes(self) -> tuple[int, int]:
        """(min_size, max_size) for the detector's own transform, so that its resize is the identity."""
        if self.mode == "letterbox":
            return self.size, self.size
        return self.min_size, self.max_size


class DatasetError(AutolossError, ValueError):
    """A dataset file that cannot be used at all (malformed JSON, a missing field), naming the file."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class DataWarning(UserWarning):
    """Bad items that were skipped or repaired while loading (emitted once per load)."""


@dataclass
class DataReport:
    """Counts of what a loader skipped or repaired; `problems()` lists the non-zero ones."""

    images_missing: int = 0
    images_unreadable: int = 0
    boxes_clipped: int = 0
    boxes_dropped: int = 0
    annotations_crowd: int = 0
    annotations_orphaned: int = 0
    images_without_boxes: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, counter: str, example: str) -> None:
        setattr(self, counter, getattr(self, counter) + 1)
        if len(self.examples) < 5:
            self.examples.append(example)

    def problems(self) -> dict[str, int]:
        # Images without boxes are legitimate negatives and crowd regions are evaluated as ignore
        # areas: neither is a problem worth a warning.
        skip = {"examples", "images_without_boxes", "annotations_crowd"}
        return {k: v for k, v in self.__dict__.items() if k not in skip and v}

    def summary(self) -> str:
        counts = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in self.problems().items())
        first = f" (e.g. {'; '.join(self.examples[:3])})" if self.examples else ""
        return f"{counts}{first}"

    def warn_once(self, source: str) -> None:
        if self.problems():
            warnings.warn(f"{source}: {self.summary()}", DataWarning, stacklevel=3)


class Split(Protocol):
    """What training and evaluation read from a split (`DetectionData`, `coco_images.CocoImages`)."""

    class_names: tuple[str, ...]
    boxes: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]

    def __len__(self) -> int: ...

    @property
    def resize(self) -> Resize: ...

    @property
    def image_size(self) -> int: ...

    def image(self, i: int) -> np.ndarray: ...

    def ground_truth(self) -> dict[str, Any]: ...

    def to_original(
        self, i: int, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[int, np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class DetectionData:
    """One split: images uint8 [N,S,S,3], per-image boxes float32 [n,4] xyxy and labels int64 [n] in 1..K."""

    images: np.ndarray
    boxes: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...]
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.boxes) != n or len(self.labels) != n:
            raise ValueError(f"{n} images but {len(self.boxes)} box sets and {len(self.labels)} label sets")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1]) if len(self.images) else 0

    @property
    def num_boxes(self) -> int:
        return sum(len(b) for b in self.boxes)

    @property
    def resize(self) -> Resize:
        return Resize("letterbox", self.image_size)

    def image(self, i: int) -> np.ndarray:
        return self.images[i]

    def ground_truth(self) -> dict[str, Any]:
        """The split as a COCO instances dict; image ids are 1-based positions, category ids the labels."""
        images, annotations = [], []
        size = self.image_size
        for i, (boxes, labels) in enumerate(zip(self.boxes, self.labels, strict=True)):
            images.append({"id": i + 1, "width": size, "height": size, "file_name": f"{i + 1}.png"})
            for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
                w, h = box[2] - box[0], box[3] - box[1]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": int(label),
                        "bbox": [box[0], box[1], w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(self.class_names)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def to_original(
        self, i: int, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """(COCO image id, boxes, category ids) of detections on image i: generated images are their own
        original, so only the ids change."""
        return i + 1, boxes, labels

    def subset(self, indices: list[int] | np.ndarray) -> DetectionData:
        idx = [int(i) for i in indices]
        return DetectionData(
            images=self.images[idx],
            boxes=tuple(self.boxes[i] for i in idx),
            labels=tuple(self.labels[i] for i in idx),
            class_names=self.class_names,
        )


@dataclass(frozen=True)
class DataSplit:
    """What `load_dataset` returns: the three splits, the class names (index i is label i+1), the report
    and how the splits were made.

    `train` is what every training trains on; `val` (search-val) is what every selection sees (rungs,
    promotion, parents, the hall of fame); `test` is only for the final table, transfer and fidelity
    targets, so that what is reported was never selected on."""

    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    report: DataReport
    method: str = ""

    def split(self, name: str) -> Split:
        """A split by its name: "train", "val" (search-val) or "test"."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_NAMES)}, got {name!r}")
        return getattr(self, name)

    def describe(self) -> dict[str, Any]:
        """Split sizes and how they were made, for run directories and tables."""
        return {
            "method": self.method,
            **{name: len(getattr(self, name)) for name in SPLIT_NAMES},
        }

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def letterbox(image: Image.Image, size: int) -> tuple[np.ndarray, float]:
    """Resize keeping aspect so the long side is `size`, pad bottom/right; return (uint8 [S,S,3], scale)."""
    image = to_rgb(image)
    w, h = image.size
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), PAD_RGB)
    canvas.paste(resized, (0, 0))
    return np.asarray(canvas, dtype=np.uint8), scale


def to_rgb(image: Image.Image) -> Image.Image:
    """Grayscale, palette and RGBA images become RGB (alpha composited on the pad colour, not black)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*PAD_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def clean_boxes(
    boxes: np.ndarray, width: float, height: float, report: DataReport, where: str, min_size: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes to the image; return (clipped boxes, keep mask), counting repairs in `report`.

    A box narrower or lower than `min_size` pixels after clipping (including zero, negative and wholly
    outside boxes) is dropped: it cannot be matched and breaks torchvision's degenerate-box check.
    """
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
    keep = ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    changed = np.any(np.abs(clipped - boxes) > 1e-3, axis=1)
    for i in np.flatnonzero(~keep):
        report.note("boxes_dropped", f"{where}: box {boxes[i].round(1).tolist()} is empty inside the image")
    report.boxes_clipped += int((keep & changed).sum())
    return clipped, keep
