"""Datasets: the shapes generator, the COCO loader on the shared real sets and on broken fixtures."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autoloss.detection.data import DatasetError, DataWarning, letterbox
from autoloss.detection.datasets import load_dataset
from autoloss.detection.shapes import SHAPE_CLASSES, generate_shapes

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
BCCD = SHARED / "bccd" / "annotations.coco.json"
MICRO = SHARED / "microcontrollers" / "annotations.coco.json"
needs_shared = pytest.mark.skipif(not BCCD.exists(), reason="shared datasets not present")


def test_shapes_is_deterministic_and_prefix_stable():
    a = generate_shapes("train", 12, 64, seed=3)
    fresh = load_dataset("shapes", image_size=64, seed=3, train_size=20, val_size=5)
    # a smaller dataset is a prefix of a larger one: images are keyed by (seed, split, index)
    assert np.array_equal(fresh.train.images[:12], a.images)
    for i in range(12):
        assert np.array_equal(fresh.train.boxes[i], a.boxes[i]) and np.array_equal(
            fresh.train.labels[i], a.labels[i]
        )
    other = generate_shapes("train", 12, 64, seed=4)
    assert not np.array_equal(other.images, a.images)


def test_shapes_content_is_sane():
    data = generate_shapes("val", 40, 128, seed=0)
    assert data.images.shape == (40, 128, 128, 3) and data.images.dtype == np.uint8
    counts = [len(b) for b in data.boxes]
    assert 1 <= min(counts) and max(counts) <= 6
    boxes = np.concatenate(data.boxes)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.min() >= 10 - 1e-3 and sides.max() <= 60 + 1e-3
    assert (boxes >= 0).all() and (boxes <= 128).all()
    labels = np.concatenate(data.labels)
    assert set(labels.tolist()) == set(range(1, len(SHAPE_CLASSES) + 1))
    assert not data.images.flags.writeable  # cached arrays are shared: nobody may write into them


def test_shapes_dense_has_more_smaller_objects_and_is_deterministic():
    plain = generate_shapes("val", 60, 128, seed=0)
    dense = generate_shapes("val", 60, 128, seed=0, style="shapes-dense")
    counts = [len(b) for b in dense.boxes]
    assert 3 <= min(counts) and max(counts) <= 12
    assert np.mean(counts) > 1.5 * np.mean([len(b) for b in plain.boxes])
    boxes = np.concatenate(dense.boxes)
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.min() >= 6 - 1e-3 and sides.max() <= 40 + 1e-3
    assert np.median(sides) < 20  # log-uniform sizes: most objects are small
    loaded = load_dataset("shapes-dense", seed=0, train_size=4, val_size=60)
    assert np.array_equal(loaded.val.images, dense.images)
    with pytest.raises(ValueError, match="unknown shapes style"):
        generate_shapes("val", 2, style="shapes-huge")


def test_shapes_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        generate_shapes("holdout", 3)
    with pytest.raises(ValueError, match="image_size"):
        load_dataset("shapes", image_size=16)
    with pytest.raises(ValueError, match="--images"):
        load_dataset("shapes", images="/tmp")


@needs_shared
def test_bccd_uses_its_split_field():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset must not warn
        data = load_dataset(str(BCCD), image_size=128)
    assert data.class_names == ("RBC", "WBC", "Platelets")
    # the upstream split: both evaluation splits have >= 40 images
    assert (len(data.train), len(data.val), len(data.test)) == (205, 87, 72)
    assert data.method == "upstream train/val/test"
    assert data.train.images.shape[1:] == (128, 128, 3)
    boxes = np.concatenate(data.train.boxes)
    assert boxes.max() <= 128 and boxes[:, 3].max() <= 96 + 1e-3  # 640x480 letterboxed: content is 128x96


@needs_shared
def test_microcontrollers_gets_a_seeded_split():
    a = load_dataset(str(MICRO), image_size=128, seed=0)
    b = load_dataset(str(MICRO), image_size=128, seed=0)
    c = load_dataset(str(MICRO), image_size=128, seed=1)
    # upstream 142 train / 7 test: too few to evaluate on, so all 149 are re-split, 37 + 37 held out
    assert len(a.class_names) == 4 and (len(a.train), len(a.val), len(a.test)) == (75, 37, 37)
    assert "re-split, seed 0" in a.method and "142/0/7" in a.method
    assert np.array_equal(a.val.images, b.val.images) and a.test.paths == b.test.paths
    assert not np.array_equal(a.val.images, c.val.images)
    assert not set(a.train.paths) & (set(a.val.paths) | set(a.test.paths))


def _write_coco(tmp_path: Path, images, annotations, categories, n_files: int = 3, mode: str = "RGB") -> Path:
    for i in range(n_files):
        # a shade per file: the same bytes in two splits would be a duplicate-image error
        Image.new(mode, (80, 40), 128 + i if mode == "L" else (128, 128, 128 + i)).save(
            tmp_path / f"img{i}.png"
        )
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _img(i: int, **extra):
    return {"id": i, "file_name": f"img{i}.png", "width": 80, "height": 40, **extra}


def _ann(i: int, image_id: int, cat: int, bbox):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": 1, "iscrowd": 0}


def test_coco_bad_items_are_skipped_counted_and_warned_once(tmp_path):
    images = [_img(0, split="train"), _img(1, split="train"), _img(2, split="val"), _img(7, split="train")]
    annotations = [
        _ann(1, 0, 10, [10, 10, 20, 10]),
        _ann(2, 0, 30, [70, 30, 30, 30]),  # sticks out of the 80x40 image: clipped
        _ann(3, 1, 10, [90, 10, 5, 5]),  # wholly outside: dropped
        _ann(4, 1, 30, [5, 5, 0, 10]),  # zero width: dropped
        _ann(5, 2, 30, [1, 1, -4, 3]),  # negative width: dropped -> image 2 is a negative
        _ann(6, 99, 10, [1, 1, 5, 5]),  # unknown image
    ]
    # non-contiguous category ids 10 and 30 become labels 1 and 2
    path = _write_coco(tmp_path, images, annotations, [{"id": 30, "name": "b"}, {"id": 10, "name": "a"}])
    with pytest.warns(DataWarning) as record:
        data = load_dataset(str(path), image_size=64)
    assert len(record) == 1
    message = str(record[0].message)
    assert "images missing: 1" in message and "boxes dropped: 3" in message
    report = data.report
    assert (report.images_missing, report.boxes_dropped, report.boxes_clipped) == (1, 3, 1)
    assert report.annotations_orphaned == 1
    assert data.class_names == ("a", "b")
    # img7 has no file; the other three are re-split one per split (no test split, too few images)
    assert (len(data.train), len(data.val), len(data.test)) == (1, 1, 1)
    by_id = {
        split.image_ids[0]: (split.boxes[0], split.labels[0]) for split in (data.train, data.val, data.test)
    }
    assert by_id[0][1].tolist() == [1, 2]
    scale = 64 / 80
    np.testing.assert_allclose(by_id[0][0][1], np.array([70, 30, 80, 40]) * scale)
    assert len(by_id[1][0]) == 0 and len(by_id[2][0]) == 0  # kept as negatives


def test_coco_grayscale_and_rgba_become_rgb(tmp_path):
    path = _write_coco(
        tmp_path, [_img(0), _img(1), _img(2)], [_ann(1, 0, 1, [1, 1, 9, 9])], [{"id": 1, "name": "x"}], 3, "L"
    )
    Image.new("RGBA", (80, 40), (255, 0, 0, 0)).save(tmp_path / "img1.png")  # fully transparent
    data = load_dataset(str(path), image_size=64, seed=0)
    both = np.concatenate([data.train.images, data.val.images, data.test.images])
    assert both.shape[-1] == 3 and both.dtype == np.uint8
    # a transparent pixel shows the pad colour, not black
    assert any((img[0, 0] == (124, 116, 104)).all() for img in both)


def test_coco_unreadable_image_without_a_stated_size_is_skipped(tmp_path):
    # no width/height in the JSON: the header is read when the split is made, and a bad one left out
    images = [{"id": i, "file_name": f"img{i}.png"} for i in range(4)]
    path = _write_coco(tmp_path, images, [], [{"id": 1, "name": "x"}], 4)
    (tmp_path / "img1.png").write_bytes(b"not a png")
    with pytest.warns(DataWarning, match="images unreadable: 1"):
        data = load_dataset(str(path), image_size=64)
    assert len(data.train) + len(data.val) + len(data.test) == 3
    assert all(s == (80, 40) for split in (data.train, data.val, data.test) for s in split.sizes)


def test_coco_image_with_a_stated_size_is_checked_when_decoded(tmp_path, monkeypatch):
    # The JSON states sizes, so no image is opened to make the splits; a corrupt file shows when decoded
    # (a blank image), and one whose pixels disagree with its stated size is scaled to it, since its
    # boxes are in that frame.
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    annotations = [_ann(1, 2, 1, [20, 10, 40, 20])]
    path = _write_coco(tmp_path, [_img(i) for i in range(3)], annotations, [{"id": 1, "name": "x"}], 3)
    (tmp_path / "img1.png").write_bytes(b"not a png")
    Image.new("RGB", (40, 20), (255, 255, 255)).save(tmp_path / "img2.png")  # half the stated 80x40
    data = load_dataset(str(path), image_size=80)
    assert opened == []
    splits = {split.image_ids[0]: split for split in (data.train, data.val, data.test)}
    assert splits[1].sizes == [(80, 40)]
    with pytest.warns(DataWarning, match="unreadable"):
        blank = splits[1].image(0)
    assert blank.shape == (80, 80, 3) and len(np.unique(blank)) <= 3
    with pytest.warns(DataWarning, match="is 40x20 but its annotations say 80x40"):
        frame = splits[2].image(0)
    assert frame.shape == (80, 80, 3) and (frame[:40] == 255).all()  # filled the stated frame
    np.testing.assert_allclose(splits[2].boxes[0], [[20, 10, 60, 30]])


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "malformed JSON at line 1"),
        ('{"images": [], "annotations": []}', "missing or non-list field 'categories'"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "'file_name'"),
        (
            '{"images": [], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2]}],'
            ' "categories": [{"id": 1, "name": "a"}]}',
            "bbox must be 4 numbers",
        ),
        ("[1, 2]", "top level must be an object"),
    ],
)
def test_coco_malformed_files_raise_dataset_error_naming_the_file(tmp_path, content, match):
    path = tmp_path / "broken.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=match) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_coco_missing_file_and_folder(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        load_dataset(str(tmp_path / "nope.json"))
    path = _write_coco(tmp_path, [_img(0)], [], [{"id": 1, "name": "x"}], 1)
    with pytest.raises(DatasetError, match="image folder not found"):
        load_dataset(str(path), images=str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")


def test_letterbox_keeps_aspect_and_pads_bottom_right():
    image = Image.new("RGB", (100, 50), (255, 255, 255))
    array, scale = letterbox(image, 64)
    assert scale == 0.64 and array.shape == (64, 64, 3)
    assert (array[:32, :, :] == 255).all() and (array[33:, :, :] != 255).all()


def test_a_photo_is_loaded_as_its_exif_orientation_shows_it(tmp_path):
    # Stored 80 wide and 40 high with a bright block at the stored top-left; EXIF orientation 6 says
    # "turn 90 degrees clockwise to show": shown 40 wide, 80 high, with the block at the top-right.
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[0:10, 0:20] = 250
    exif = Image.Exif()
    exif[0x0112] = 6
    for i in range(3):
        Image.fromarray(stored + i).save(tmp_path / f"img{i}.jpg", exif=exif, quality=95)
    images = [{"id": i, "file_name": f"img{i}.jpg", "width": 40, "height": 80} for i in range(3)]
    # The block as an annotation tool that shows the photo upright puts it: x 30-40, y 0-20.
    annotations = [_ann(i + 1, i, 1, [30, 0, 10, 20]) for i in range(3)]
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]})
    )
    data = load_dataset(str(path), image_size=80)
    split = data.train
    assert split.sizes[0] == (40, 80)  # (width, height) as shown, from the header and its orientation
    frame = split.image(0)  # letterboxed to 80: the shown 40x80 image, padded to the right
    x0, y0, x1, y1 = split.boxes[0][0].round().astype(int)
    assert (x0, y0, x1, y1) == (30, 0, 40, 20)
    assert frame[y0:y1, x0:x1].mean() > 200  # the block is inside its box
    assert frame[60:80, 0:30].mean() < 60  # and not where the stored orientation would put it


def test_keep_aspect_images_pass_the_detector_transform_unresized(tmp_path):
    from autoloss.detection.detectors import build_detector
    from autoloss.detection.loader import batch_of

    sizes = [(640, 480), (2000, 500), (333, 1001), (801, 799)]
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (100, 100, 100 + i)).save(tmp_path / f"img{i}.png")
    images = [
        {"id": i, "file_name": f"img{i}.png", "width": w, "height": h} for i, (w, h) in enumerate(sizes)
    ]
    annotations = [_ann(i + 1, i, 1, [1, 1, 30, 30]) for i in range(len(sizes))]
    path = tmp_path / "ann.json"
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "a"}]})
    )
    data = load_dataset(str(path), resize="keep-aspect", min_size=160, max_size=320)
    low, high = data.train.resize.detector_sizes()
    model = build_detector("fcos", data.num_classes, min_size=low, max_size=high).eval()
    for split in (data.train, data.val, data.test):
        frames, _ = batch_of(split, list(range(len(split))))
        batch, _ = model.model.transform(frames)
        # the image sizes after the detector's resize are the frames' own: it resized nothing again
        assert batch.image_sizes == [tuple(f.shape[-2:]) for f in frames]
