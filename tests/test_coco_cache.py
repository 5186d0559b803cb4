"""A COCO JSON is parsed once per machine: the cached columns equal a fresh parse, are memory-mapped, follow
edits of the file, survive a damaged or unwritable cache, and replay the parse's report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from autoloss.detection import coco_cache
from autoloss.detection.coco_cache import load_coco
from autoloss.detection.coco_json import read_coco_json
from autoloss.detection.data import DataReport, DatasetError, DataWarning


def _write(path: Path, n_images: int = 4, extra_annotations: list | None = None) -> Path:
    images = [
        {"id": 10 + i, "file_name": f"d/img{i}.jpg", "width": 64, "height": 48} for i in range(n_images)
    ]
    images[1]["split"] = "val"
    annotations = [
        {
            "id": 100 + a,
            "image_id": 10 + a % n_images,
            "category_id": (7, 3)[a % 2],
            "bbox": [1.25 + a, 2.5, 10.1, 5.0],
            "area": 33.3 + a,
            "iscrowd": int(a == 5),
            "segmentation": [[1, 2, 3, 4, 5, 6]],
        }
        for a in range(9)
    ]
    del annotations[2]["area"]  # evaluation falls back to the box's area
    annotations += extra_annotations or []
    categories = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _same(a, b) -> None:
    assert (a.class_names, a.category_ids, a.split_names) == (b.class_names, b.category_ids, b.split_names)
    for name in coco_cache._ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for i in range(len(a)):
        assert a.file_name(i) == b.file_name(i) and a.split(i) == b.split(i)
        assert a.records(i) == b.records(i)
        assert np.array_equal(a.boxes(i), b.boxes(i)) and np.array_equal(a.labels(i), b.labels(i))


def test_a_cached_load_equals_a_fresh_parse_and_is_memory_mapped(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "cache"))
    orphan = {"id": 999, "image_id": 12345, "category_id": 7, "bbox": [0, 0, 1, 1]}
    path = _write(tmp_path / "ann.json", extra_annotations=[orphan])
    fresh_report, first_report, warm_report = DataReport(), DataReport(), DataReport()
    fresh = read_coco_json(path, fresh_report)
    first = load_coco(path, first_report)
    (entry,) = (tmp_path / "cache" / "coco").iterdir()
    assert (entry / "meta.json").is_file()

    calls = []
    monkeypatch.setattr(coco_cache, "read_coco_json", lambda *a: calls.append(a))
    warm = load_coco(path, warm_report)
    assert calls == []  # not parsed again
    assert isinstance(warm.bbox, np.memmap) and not warm.bbox.flags.writeable
    _same(fresh, warm)
    _same(fresh, first)
    assert warm.path == str(path)
    for report in (first_report, warm_report):
        assert report.__dict__ == fresh_report.__dict__
    assert warm_report.annotations_orphaned == 1 and warm_report.annotations_crowd == 1
    assert "annotation 999 names an unknown image/category" in warm_report.examples


def test_what_the_columns_hold(tmp_path):
    source = read_coco_json(_write(tmp_path / "ann.json"), DataReport())
    assert source.class_names == ("three", "seven") and source.category_ids == (3, 7)
    assert len(source) == 4 and source.file_name(2) == "d/img2.jpg"
    assert source.split(1) == "val" and source.split(0) is None
    # image 10 has annotations 0, 4, 8 (file order); image 11 has 1, 5 (5 is crowd) and 9 is past the end
    records = source.records(1)
    assert [r["iscrowd"] for r in records] == [0, 1]
    assert records[0] == {"category_id": 3, "bbox": [2.25, 2.5, 10.1, 5.0], "area": 34.3, "iscrowd": 0}
    assert source.records(2)[0]["area"] == pytest.approx(10.1 * 5.0)  # no area: the box's
    np.testing.assert_array_equal(source.labels(1), [1])  # the crowd region is no training target
    np.testing.assert_allclose(source.boxes(1), [[2.25, 2.5, 12.35, 7.5]], rtol=1e-6)
    assert source.boxes(1).dtype == np.float32
    assert [lab.tolist() for lab in source.image_labels()] == [[2, 2, 2], [1], [2, 2], [1, 1]]


def test_an_edited_file_is_parsed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path / "ann.json", n_images=4)
    assert len(load_coco(path, DataReport())) == 4
    _write(path, n_images=5)
    os.utime(path, ns=(1, 1))  # even with an old modification time, the size changed
    assert len(load_coco(path, DataReport())) == 5
    assert len(list((tmp_path / "cache" / "coco").iterdir())) == 2


def test_a_damaged_entry_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path / "ann.json")
    load_coco(path, DataReport())
    (entry,) = (tmp_path / "cache" / "coco").iterdir()
    (entry / "bbox.npy").write_bytes(b"torn")
    again = load_coco(path, DataReport())
    _same(again, read_coco_json(path, DataReport()))
    assert isinstance(load_coco(path, DataReport()).bbox, np.memmap)  # stored anew


def test_an_unwritable_cache_costs_speed_not_the_run(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("AUTOLOSS_CACHE", str(blocker))
    path = _write(tmp_path / "ann.json")
    with pytest.warns(DataWarning, match="could not cache the parsed annotations"):
        source = load_coco(path, DataReport())
    _same(source, read_coco_json(path, DataReport()))


def test_two_processes_storing_one_file_at_once(tmp_path, monkeypatch):
    # The second writer finds the first one's entry in place: no error, and the entry stays readable.
    monkeypatch.setenv("AUTOLOSS_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path / "ann.json")
    source = load_coco(path, DataReport())
    (entry,) = (tmp_path / "cache" / "coco").iterdir()
    stamp = json.loads((entry / "meta.json").read_text())["stamp"]
    coco_cache._write_entry(entry, stamp, read_coco_json(path, DataReport()))
    _same(load_coco(path, DataReport()), source)
    assert [p.name for p in (tmp_path / "cache" / "coco").iterdir()] == [entry.name]


def test_polygons_are_not_kept_and_a_duplicate_image_id_is_an_error(tmp_path):
    path = _write(tmp_path / "ann.json")
    source = read_coco_json(path, DataReport())
    assert not any(isinstance(v, list) for v in source.__dict__.values())
    raw = json.loads(path.read_text())
    raw["images"][2]["id"] = raw["images"][0]["id"]
    path.write_text(json.dumps(raw))
    with pytest.raises(DatasetError, match="image id 10 is given to two images"):
        read_coco_json(path, DataReport())
