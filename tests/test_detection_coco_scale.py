"""COCO data at scale: two files, a seeded train subset, images read on demand within a bounded cache,
keep-aspect resizing, crowd regions and evaluation in original coordinates against pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autoloss.detection.coco_eval import coco_ground_truth, coco_map, detections_to_coco
from autoloss.detection.coco_images import CocoImages, ImageCache
from autoloss.detection.coco_json import read_coco_json
from autoloss.detection.coco_write import write_coco
from autoloss.detection.data import DataReport, DatasetError, Resize, letterbox
from autoloss.detection.datasets import load_dataset
from autoloss.detection.loader import train_loader
from autoloss.detection.shapes import generate_shapes

pycocotools = pytest.importorskip("pycocotools")


def _two_files(tmp_path: Path, n_train: int = 12, n_val: int = 6) -> tuple[Path, Path]:
    train = write_coco(
        generate_shapes("train", n_train, 96, 0), tmp_path / "ann/train.json", tmp_path / "train", crop=True
    )
    val = write_coco(
        generate_shapes("val", n_val, 96, 0),
        tmp_path / "ann/val.json",
        tmp_path / "val",
        crop=True,
        seed=1,
        first_id=1000,
    )
    return train, val


def _load_two(tmp_path: Path, train: Path, val: Path, **settings):
    """`load_dataset` on the two files `_two_files` wrote, each with its own image folder."""
    return load_dataset(
        str(train), str(tmp_path / "train"), val_spec=str(val), val_images=str(tmp_path / "val"), **settings
    )


def test_two_file_layout_loads_each_file_from_its_own_folder(tmp_path):
    train, val = _two_files(tmp_path)
    data = _load_two(tmp_path, train, val, image_size=64)
    # the second file is test; search-val is carved from the training file (a quarter of its 12 images)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 3, 6)
    assert data.test.image_ids == list(range(1000, 1006))
    assert set(data.val.image_ids) < set(range(12)) and not set(data.val.image_ids) & set(
        data.train.image_ids
    )
    # the first test image, letterboxed, is what the file holds
    with Image.open(tmp_path / "val" / "0001000.png") as image:
        expected, _ = letterbox(image, 64)
    assert np.array_equal(data.test.image(0), expected)
    assert data.train.images[[0, 1]].shape == (2, 64, 64, 3)


def test_two_files_must_share_categories_and_val_images_needs_val_data(tmp_path):
    train, val = _two_files(tmp_path, 4, 2)
    raw = json.loads(val.read_text())
    raw["categories"][0]["name"] = "disc"
    val.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="categories") as info:
        _load_two(tmp_path, train, val)
    assert str(val) in str(info.value)
    with pytest.raises(ValueError, match="--val-images needs --val-data"):
        load_dataset(str(train), str(tmp_path / "train"), val_images=str(tmp_path / "val"))


def test_train_subset_is_seeded_ordered_and_leaves_val_alone(tmp_path):
    train, val = _two_files(tmp_path, 20, 3)
    full = _load_two(tmp_path, train, val, image_size=64)
    a = _load_two(tmp_path, train, val, image_size=64, train_subset=7, seed=0)
    b = _load_two(tmp_path, train, val, image_size=64, train_subset=7, seed=0)
    c = _load_two(tmp_path, train, val, image_size=64, train_subset=7, seed=1)
    assert len(a.train) == 7 and a.train.image_ids == b.train.image_ids
    assert a.train.image_ids != c.train.image_ids
    assert a.train.image_ids == sorted(a.train.image_ids)
    assert set(a.train.image_ids) <= set(full.train.image_ids)
    assert a.val.image_ids == full.val.image_ids and a.test.image_ids == full.test.image_ids
    with pytest.raises(ValueError, match="train subset"):
        _load_two(tmp_path, train, val, image_size=64, train_subset=0)


def test_images_are_decoded_on_demand_within_the_cache_budget(tmp_path):
    train, val = _two_files(tmp_path, 16, 2)
    budget_mb = 5 * 64 * 64 * 3 / 2**20  # room for five 64 px images
    data = _load_two(tmp_path, train, val, image_size=64, cache_mb=budget_mb)
    cache = data.train.cache
    assert len(cache) == 0  # loading read headers only
    first = data.train.image(0).copy()
    for i in range(len(data.train)):
        data.train.image(i)
    assert len(cache) == 5 and cache.bytes <= cache.max_bytes
    assert np.array_equal(data.train.image(0), first)  # evicted and decoded again: the same pixels
    with pytest.raises(ValueError, match="cache"):
        ImageCache(-1)


def test_keep_aspect_resizes_short_side_and_scales_boxes(tmp_path):
    train, val = _two_files(tmp_path, 6, 2)
    data = _load_two(tmp_path, train, val, resize="keep-aspect", min_size=80, max_size=120)
    raw = json.loads(train.read_text())
    by_id = {info["id"]: info for info in raw["images"]}
    for i in range(len(data.train)):
        info = by_id[data.train.image_ids[i]]  # search-val was carved out: look images up by id
        w, h = info["width"], info["height"]
        scale = min(80 / min(w, h), 120 / max(w, h))
        pixels = data.train.image(i)
        assert pixels.shape[:2] == (round(h * scale), round(w * scale))
        anns = [a for a in raw["annotations"] if a["image_id"] == info["id"]]
        if anns:
            x, y, bw, bh = anns[0]["bbox"]
            np.testing.assert_allclose(
                data.train.boxes[i][0], np.array([x, y, x + bw, y + bh]) * scale, rtol=1e-5
            )
    with pytest.raises(ValueError, match="min_size"):
        load_dataset(str(train), str(tmp_path / "train"), resize="keep-aspect", min_size=200, max_size=100)


def test_loader_workers_do_not_change_the_batches(tmp_path):
    train, _ = _two_files(tmp_path, 10, 2)
    data = load_dataset(str(train), str(tmp_path / "train"), resize="keep-aspect", min_size=64, max_size=96)
    batches = {}
    for workers in (0, 1):
        stream = iter(train_loader(data.train, 4, seed=3, flip_prob=0.5, workers=workers))
        batches[workers] = [next(stream) for _ in range(4)]
    for ours, theirs in zip(batches[0], batches[1], strict=True):
        for (pa, ba, la), (pb, bb, lb) in zip(ours, theirs, strict=True):
            assert torch.equal(pa, pb) and torch.equal(ba, bb) and torch.equal(la, lb)
    # images of different aspect ratios travel as a list, not a stack
    shapes = {tuple(p.shape) for batch in batches[0] for p, _, _ in batch}
    assert len(shapes) > 1


def _crowd_fixture(tmp_path: Path) -> Path:
    """Three images of different aspect ratios; image 2 has a crowd region and an `area` that is not
    the box area (as COCO's mask areas are not)."""
    sizes = {1: (160, 90), 2: (90, 140), 3: (120, 120)}
    for image_id, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (90, 90, 90)).save(tmp_path / f"{image_id}.jpg")
    anns = [
        (1, 1, [10, 10, 30, 20], 600.0, 0),
        (1, 2, [80, 40, 60, 40], 2400.0, 0),
        (2, 1, [5, 5, 20, 30], 300.0, 0),  # box area 600, mask area 300: small by area, not by box
        (2, 2, [30, 60, 50, 70], 3500.0, 1),  # crowd
        (2, 2, [10, 100, 30, 30], 900.0, 0),
        (3, 1, [20, 20, 80, 80], 6400.0, 0),
    ]
    raw = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "width": w, "height": h, "split": "val" if i > 0 else "train"}
            for i, (w, h) in sizes.items()
        ]
        + [{"id": 9, "file_name": "9.jpg", "width": 50, "height": 50, "split": "train"}],
        "annotations": [
            {"id": k + 1, "image_id": im, "category_id": cat, "bbox": box, "area": area, "iscrowd": crowd}
            for k, (im, cat, box, area, crowd) in enumerate(anns)
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    Image.new("RGB", (50, 50)).save(tmp_path / "9.jpg")
    path = tmp_path / "crowd.json"
    path.write_text(json.dumps(raw))
    return path


def test_evaluation_equals_pycocotools_on_the_original_annotations(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    path = _crowd_fixture(tmp_path)
    val, _ = _val_images(path, Resize("keep-aspect", min_size=64, max_size=100))
    assert val.image_ids == [1, 2, 3]
    rng = np.random.default_rng(0)
    # detections in original pixels: near misses of every object, one on the crowd region, one stray
    original = {
        1: [([11, 9, 42, 31], 1, 0.9), ([78, 42, 139, 79], 2, 0.8), ([100, 0, 150, 40], 2, 0.7)],
        2: [([6, 4, 24, 36], 1, 0.95), ([32, 62, 78, 128], 2, 0.85), ([12, 98, 39, 131], 2, 0.4)],
        3: [([22, 18, 98, 101], 1, 0.6), ([0, 0, 30, 30], 1, 0.3)],
    }
    detections, records = [], []
    for i, image_id in enumerate(val.image_ids):
        boxes = np.array([b for b, _, _ in original[image_id]], np.float32) + rng.uniform(-0.3, 0.3, (1, 4))
        labels = np.array([c for _, c, _ in original[image_id]])
        scores = np.array([s for _, _, s in original[image_id]], np.float32)
        # what a detector would output: the same boxes in its (resized) frame, labels 1..K
        detections.append({"boxes": boxes * val.scales[i], "scores": scores, "labels": labels})
        for box, label, score in zip(boxes.tolist(), labels.tolist(), scores.tolist(), strict=True):
            records.append(
                {
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                }
            )
    ours = coco_map(coco_ground_truth(val), detections_to_coco(detections, val))

    gt = COCO(str(path))
    gt.dataset["images"] = [im for im in gt.dataset["images"] if im["id"] != 9]  # the train image
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(records), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    theirs = evaluator.stats[:6]
    np.testing.assert_allclose(list(ours.values()), theirs, atol=1e-9)
    assert 0.0 < ours["AP"] < 1.0 and ours["APs"] != -1.0

    # the crowd region matters: without it as an ignore area the detection on it is a false positive
    no_crowd = coco_ground_truth(val)
    no_crowd["annotations"] = [a for a in no_crowd["annotations"] if not a["iscrowd"]]
    assert coco_map(no_crowd, detections_to_coco(detections, val))["AP"] < ours["AP"]


def test_crowd_regions_are_not_training_targets(tmp_path):
    path = _crowd_fixture(tmp_path)
    val, report = _val_images(path, Resize("letterbox", size=64))
    assert report.annotations_crowd == 1
    assert [len(b) for b in val.boxes] == [2, 2, 1]
    assert "crowd" not in report.summary()  # counted, but not a problem to warn about


def _val_images(path: Path, resize: Resize) -> tuple[CocoImages, DataReport]:
    """The fixture's images marked "val", read as a split (too few images for the loader's three splits)."""
    report = DataReport()
    source = read_coco_json(path, report)
    picked = [i for i, image in enumerate(source.images) if image.split == "val"]
    return CocoImages(source, picked, path.parent, resize, report), report
