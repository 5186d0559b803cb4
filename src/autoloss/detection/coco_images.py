"""`CocoImages`: one split of a COCO dataset, read from disk image by image as training asks for it.

Only annotations and image sizes stay in memory (a 118k-image train2017 is a few hundred MB of JSON, not
the 23 GB its pixels take at 256 px); pixels are decoded on demand and kept in a small cache bounded in
bytes (`ImageCache`), so a short proxy training on a small dataset decodes each image once, while a large
one never holds more than the cache. Boxes are in the detector's frame (the original boxes times the
image's resize scale); `ground_truth()` and `to_original()` give COCO evaluation the original annotations
(crowd regions included) and detections mapped back to original pixels, so AP and AP_S/M/L equal what
pycocotools reports on the dataset's own annotations.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from autoloss.detection.coco_json import CocoSource
from autoloss.detection.data import (
    PAD_RGB,
    DataReport,
    DataWarning,
    Resize,
    clean_boxes,
    letterbox,
    to_rgb,
)

DEFAULT_CACHE_MB = 256
ORIENTATION_TAG = 0x0112  # EXIF "Orientation"


class ImageCache:
    """Decoded, resized images by key, least recently used dropped first once `max_bytes` is reached."""

    def __init__(self, max_mb: float = DEFAULT_CACHE_MB) -> None:
        if max_mb < 0:
            raise ValueError(f"the image cache size must be >= 0 MB, got {max_mb}")
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = 0
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        # DataLoader workers are processes, but a threaded caller (the eval prefetch) must not race.
        self._lock = threading.Lock()

    def get(self, key: Any) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= dropped.nbytes

    def __len__(self) -> int:
        return len(self._items)


class CocoImages:
    """The images `indices` of `source`, under `root`, resized by `resize`.

    An image's size is the one its JSON entry states, so making a split opens no image: COCO train2017
    would otherwise read 118k headers before the first step. Only entries without a size have their header
    read here. Missing files (one folder listing per folder, not a stat per image) and, for entries without
    a size, unreadable headers are left out and counted in `report`. A file that turns out corrupt when it
    is decoded is replaced by a blank image with no boxes, and one whose pixels disagree with its stated
    size is scaled to that size (its boxes are in that frame), each with one `DataWarning`.
    """

    def __init__(
        self,
        source: CocoSource,
        indices: list[int],
        root: Path,
        resize: Resize,
        report: DataReport,
        cache: ImageCache | None = None,
    ) -> None:
        self.source = source
        self.source_path = source.path
        self.class_names = source.class_names
        self.category_ids = source.category_ids
        self.resize = resize
        self.cache = cache if cache is not None else ImageCache()
        self.rows: list[int] = []  # the source's image index of each image kept
        self.paths: list[str] = []
        self.image_ids: list[int] = []
        self.sizes: list[tuple[int, int]] = []  # original (width, height)
        self.scales: list[float] = []
        boxes, labels = [], []
        listing = _Listing()
        for i in indices:
            file_name = source.file_name(i)
            path = root / file_name
            width, height = (int(v) for v in source.sizes[i])
            if not listing.exists(path):
                report.note("images_missing", file_name)
                continue
            if not width:
                size = _image_size(path)
                if isinstance(size, str):
                    report.note(size, file_name)
                    continue
                width, height = size
            clipped, keep = clean_boxes(source.boxes(i), width, height, report, file_name)
            scale = resize.scale(width, height)
            if not keep.any():
                report.images_without_boxes += 1
            boxes.append((clipped[keep] * scale).astype(np.float32))
            labels.append(source.labels(i)[keep])
            self.rows.append(i)
            self.paths.append(str(path))
            self.image_ids.append(int(source.image_ids[i]))
            self.sizes.append((width, height))
            self.scales.append(scale)
        self.boxes: tuple[np.ndarray, ...] = tuple(boxes)
        self.labels: tuple[np.ndarray, ...] = tuple(labels)
        self._warned: set[str] = set()

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_size(self) -> int:
        """The side of a letterboxed image; the largest side an image can have when keeping aspect."""
        return self.resize.size if self.resize.mode == "letterbox" else self.resize.max_size

    @property
    def images(self) -> _LazyImages:
        """`images[i]`, `images[[i, j]]` and `images[a:b]` decode on demand (a stack needs letterbox)."""
        return _LazyImages(self)

    def image(self, i: int) -> np.ndarray:
        """Image i in the detector's frame, uint8 [H,W,3], read-only (it may be shared by the cache)."""
        key = (self.paths[i], self.resize)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        array = self._decode(i)
        array.flags.writeable = False
        self.cache.put(key, array)
        return array

    def _decode(self, i: int) -> np.ndarray:
        path = self.paths[i]
        try:
            with Image.open(path) as image:
                image.load()
                # As the camera meant it: annotation tools (and browsers) show a photo with its EXIF
                # orientation applied, so that is the frame its boxes and JSON width/height are in.
                ImageOps.exif_transpose(image, in_place=True)
                if image.size != self.sizes[i]:
                    self._warn(
                        path,
                        f"is {image.size[0]}x{image.size[1]} but its annotations say "
                        f"{self.sizes[i][0]}x{self.sizes[i][1]}; scaled to that, where its boxes are",
                    )
                    return self._resized(image.resize(self.sizes[i], Image.Resampling.BILINEAR))
                return self._resized(image)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            self._warn(path, f"unreadable ({err}); trained on as a blank image")
            width, height = self.sizes[i]
            shape = self._frame_shape(width, height)
            return np.broadcast_to(np.asarray(PAD_RGB, np.uint8), (*shape, 3)).copy()

    def _warn(self, path: str, problem: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            warnings.warn(f"{path}: {problem}", DataWarning, stacklevel=3)

    def _resized(self, image: Image.Image) -> np.ndarray:
        if self.resize.mode == "letterbox":
            return letterbox(image, self.resize.size)[0]
        image = to_rgb(image)
        height, width = self._frame_shape(*image.size)
        return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)

    def _frame_shape(self, width: int, height: int) -> tuple[int, int]:
        if self.resize.mode == "letterbox":
            return self.resize.size, self.resize.size
        scale = self.resize.scale(width, height)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def ground_truth(self) -> dict[str, Any]:
        """The split's own COCO annotations (original ids, pixels, areas and crowd flags)."""
        images, annotations = [], []
        for row, image_id, (width, height), path in zip(
            self.rows, self.image_ids, self.sizes, self.paths, strict=True
        ):
            images.append({"id": image_id, "width": width, "height": height, "file_name": Path(path).name})
            for record in self.source.records(row):
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **record})
        categories = [
            {"id": cat_id, "name": name}
            for cat_id, name in zip(self.category_ids, self.class_names, strict=True)
        ]
        return {"images": images, "annotations": annotations, "categories": categories}

    def to_original(
        self, i: int, boxes: np.ndarray, labels: np.ndarray
    ) -> tuple[int, np.ndarray, np.ndarray]:
        """Detections on image i (detector frame, labels 1..K) as (image id, original-pixel boxes clipped
        to the image, category ids)."""
        width, height = self.sizes[i]
        out = np.asarray(boxes, np.float32).reshape(-1, 4) / self.scales[i]
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        categories = np.asarray(self.category_ids, np.int64)[np.asarray(labels, np.int64) - 1]
        return self.image_ids[i], out, categories


class _LazyImages:
    def __init__(self, split: CocoImages) -> None:
        self._split = split

    def __len__(self) -> int:
        return len(self._split)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self._split.image(int(key))
        indices = range(len(self._split))[key] if isinstance(key, slice) else key
        return np.stack([self._split.image(int(i)) for i in indices])

    @property
    def shape(self) -> tuple[int, ...]:
        size = self._split.image_size
        return (len(self._split), size, size, 3)


class _Listing:
    """Which files exist, from one listing per folder: a stat per image costs minutes on a network
    file system holding COCO's 118k images."""

    def __init__(self) -> None:
        self._names: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        names = self._names.get(path.parent)
        if names is None:
            try:
                names = self._names[path.parent] = set(os.listdir(path.parent))
            except OSError:
                names = self._names[path.parent] = set()
        # a name the listing spells differently may still open (case-insensitive file systems)
        return path.name in names or path.is_file()


def _image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) from the file's header, or the report counter naming why it cannot be used."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            # EXIF orientations 5-8 turn the photo by a quarter: its shown width is the stored height
            if image.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8):
                return height, width
            return width, height
    except FileNotFoundError:
        return "images_missing"
    except (UnidentifiedImageError, OSError, ValueError):
        return "images_unreadable"
