"""Three splits everywhere (train / search-val / test), the duplicate-image check, the built-in real datasets
and caches keyed by content."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from autoloss.cli import cli
from autoloss.data_specs import BUILTIN, annotation_file, builtin_folder
from autoloss.detection.coco_json import MIN_EVAL_IMAGES, stratified_split
from autoloss.detection.data import DatasetError
from autoloss.detection.datasets import load_dataset
from autoloss.evolution.config import SearchConfig
from autoloss.runs.cell_cache import CacheMismatch, cell_folder, identity


def _coco(folder: Path, splits: list[str | None], labels: list[int] | None = None, name="ann.json") -> Path:
    """A COCO file of len(splits) distinct 64x48 images, one box each (class `labels[i]`, default 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    labels = labels or [1] * len(splits)
    images, annotations = [], []
    for i, split in enumerate(splits):
        # Each image different bytes: a shade from its index (same bytes in two splits is an error).
        Image.new("RGB", (64, 48), (i % 256, (i // 256) % 256, len(name))).save(
            folder / f"{Path(name).stem}{i}.png"
        )
        entry = {"id": i + 1, "file_name": f"{Path(name).stem}{i}.png", "width": 64, "height": 48}
        if split is not None:
            entry["split"] = split
        images.append(entry)
        annotations.append(
            {"id": i + 1, "image_id": i + 1, "category_id": labels[i], "bbox": [4, 4, 20, 20], "area": 400}
        )
    cats = [{"id": c, "name": f"c{c}"} for c in sorted(set(labels))]
    path = folder / name
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cats}))
    return path


def test_three_split_json_with_large_enough_splits_is_used_as_is(tmp_path):
    splits = ["train"] * 30 + ["val"] * MIN_EVAL_IMAGES + ["test"] * MIN_EVAL_IMAGES
    data = load_dataset(str(_coco(tmp_path, splits)), image_size=64)
    assert (len(data.train), len(data.val), len(data.test)) == (30, 40, 40)
    assert data.method == "upstream train/val/test"
    # image ids 1..30 train, 31..70 val, 71..110 test: exactly the file's labels
    assert data.val.image_ids == list(range(31, 71)) and data.test.image_ids == list(range(71, 111))


@pytest.mark.parametrize(
    ("splits", "why"),
    [
        (["train"] * 80 + ["val"] * 20, "80/20/0"),  # two splits
        (["train"] * 60 + ["val"] * 30 + ["test"] * 10, "60/30/10"),  # a tiny test split
        ([None] * 100, "no split field"),
    ],
)
def test_other_layouts_are_re_split_seeded_and_stated(tmp_path, splits, why):
    path = _coco(tmp_path, splits)
    a = load_dataset(str(path), image_size=64, seed=0)
    b = load_dataset(str(path), image_size=64, seed=0)
    c = load_dataset(str(path), image_size=64, seed=1)
    # 100 images: 20 % would be 20, raised towards 40 (at most a quarter): 25 each held out
    assert (len(a.train), len(a.val), len(a.test)) == (50, 25, 25)
    assert "re-split, seed 0" in a.method and why in a.method
    assert a.test.image_ids == b.test.image_ids and a.test.image_ids != c.test.image_ids
    ids = [set(s.image_ids) for s in (a.train, a.val, a.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and len(set.union(*ids)) == 100


def test_a_small_set_gets_evaluation_splits_near_40_images(tmp_path):
    # 149 images (microcontrollers' size): 20 % would be 30 per split; raised towards 40, at most a quarter
    data = load_dataset(str(_coco(tmp_path, [None] * 149)), image_size=64)
    assert (len(data.train), len(data.val), len(data.test)) == (75, 37, 37)


def test_the_re_split_is_class_stratified():
    # 90 images of class 1, 10 of the rare class 2: each evaluation split gets 2 rare images (20 % of 10)
    labels = [np.array([1])] * 90 + [np.array([2])] * 10 + [np.array([], np.int64)] * 5
    train, val, test = stratified_split(labels, seed=3, fractions=(0.6, 0.2, 0.2))
    for split, n_rare in ((train, 6), (val, 2), (test, 2)):
        assert sum(1 for i in split if 90 <= i < 100) == n_rare
        assert 0 < sum(1 for i in split if i >= 100) <= 3  # the empty images are spread too
    assert sorted(train + val + test) == list(range(105))


def test_two_files_carve_search_val_from_train_and_test_is_the_second_file(tmp_path):
    train = _coco(tmp_path / "a", [None] * 50, name="train.json")
    held = _coco(tmp_path / "b", [None] * 12, name="val.json")
    data = load_dataset(str(train), val_spec=str(held), image_size=64, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (38, 12, 12)  # a quarter of 50 carved
    assert {Path(p).parent.name for p in data.test.paths} == {"b"}
    assert "two files" in data.method and str(held) in data.method


def test_the_same_image_in_two_splits_is_an_error_naming_it(tmp_path):
    path = _coco(tmp_path, ["train"] * 50 + ["val"] * 40 + ["test"] * 40)
    shutil.copy(tmp_path / "ann3.png", tmp_path / "ann95.png")  # a train image's bytes in test
    with pytest.raises(DatasetError, match=r"ann95.png: the same image is in the train split .*ann3.png"):
        load_dataset(str(path), image_size=64)


def test_builtin_sets_load_by_name_with_licence_and_attribution():
    for name in BUILTIN:
        folder = builtin_folder(name)
        assert (folder / "LICENSE").stat().st_size > 0 and (folder / "ATTRIBUTION.txt").stat().st_size > 0
        raw = json.loads(Path(annotation_file(name)).read_text())
        assert max(max(i["width"], i["height"]) for i in raw["images"]) <= 512
    data = load_dataset("microcontrollers", image_size=128)
    assert data.class_names == ("Arduino_Nano", "ESP8266", "Heltec_ESP32_Lora", "Raspberry_Pi_3")
    assert (len(data.train), len(data.val), len(data.test)) == (75, 37, 37)
    assert load_dataset("bccd", image_size=64).method == "upstream train/val/test"
    total = sum(f.stat().st_size for f in builtin_folder("bccd").parent.rglob("*") if f.is_file())
    assert total <= 25 * 2**20  # the budget for the shipped data


def test_data_list_shows_every_builtin_set():
    r = CliRunner().invoke(cli, ["data", "list", "--json"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert [row["name"] for row in rows] == list(BUILTIN)
    bccd = rows[0]
    assert (bccd["images"], bccd["boxes"], bccd["licence"]) == (364, 4886, "MIT")
    assert bccd["splits"] == {"train": 205, "val": 87, "test": 72}
    assert CliRunner().invoke(cli, ["data", "list"]).exit_code == 0


def _cfg(data: str, **settings) -> SearchConfig:
    return SearchConfig().replace(
        task={"settings": {"preset": "tiny", "data": data, **settings}, "iterations": 5}
    )


def test_cache_folders_are_keyed_by_content_not_by_folder_name(tmp_path):
    one = _coco(tmp_path / "one" / "bccd", [None] * 20)
    two = tmp_path / "two" / "other-name"
    shutil.copytree(one.parent, two)
    copied = two / "ann.json"
    root = tmp_path / "cache"
    a = cell_folder(root, "fcos-x", identity(_cfg(str(one))))
    assert cell_folder(root, "fcos-x", identity(_cfg(str(copied)))) == a  # same data elsewhere: a hit
    # another dataset in a folder of the same name misses
    other = _coco(tmp_path / "three" / "bccd", [None] * 21)
    assert cell_folder(root, "fcos-x", identity(_cfg(str(other)))) != a
    # another split seed or another setting misses
    assert cell_folder(root, "fcos-x", identity(_cfg(str(one), data_seed=1))) != a
    assert cell_folder(root, "fcos-x", identity(_cfg(str(one), image_size=96))) != a
    # a folder whose stored settings are not the ones asked for is refused, not read
    stored = json.loads((a / "settings.json").read_text())
    stored["iterations"] = 999
    (a / "settings.json").write_text(json.dumps(stored))
    with pytest.raises(CacheMismatch, match="iterations differ"):
        cell_folder(root, "fcos-x", identity(_cfg(str(one))))


def test_a_builtin_name_and_its_file_share_one_cache(tmp_path):
    by_name = identity(_cfg("thermal"))
    by_file = identity(_cfg(annotation_file("thermal")))
    assert cell_folder(tmp_path, "t", by_name) == cell_folder(tmp_path, "t", by_file)


def test_a_tiny_search_on_a_builtin_set_reports_on_its_test_split(tmp_path):
    import autoloss

    summary = autoloss.search(
        tmp_path / "run",
        budget="smoke",
        evolution={
            "branch": "reg",
            "generations": 1,
            "offspring": 60,
            "top_k": 1,
            "parents": 1,
            "final_seeds": 2,
        },
        task={"settings": {"preset": "tiny", "data": "bccd", "image_size": 64}, "iterations": 4},
        backend={"backend": "serial"},
    )
    assert summary["split"] == "test"
    splits = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert splits["task"] == {
        "data": "bccd",
        "method": "upstream train/val/test",
        "train": 205,
        "val": 87,
        "test": 72,
    }
    text = (tmp_path / "run" / "best" / "summary.md").read_text()
    assert "test split" in text and "205 / 87 / 72" in text
    assert summary["verdict"].startswith("Too few seeds for a claim (2 < 5")
    # the final's trainings are scored on test, the rungs' on search-val: separate journal entries
    records = [json.loads(x) for x in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    assert {r.get("split", "val") for r in records} == {"val", "test"}
