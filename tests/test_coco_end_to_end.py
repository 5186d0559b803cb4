"""A user's own COCO data end to end: `train` + `eval` on COCO's two-file layout with a locally saved
pretrained backbone, and a search on two COCO files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
import yaml
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.detection.coco_write import write_coco
from autoloss.detection.shapes import generate_shapes


def _coco_two_files(tmp_path: Path, n_train: int = 24, n_val: int = 8) -> list[str]:
    train = write_coco(
        generate_shapes("train", n_train, 96, 0), tmp_path / "train.json", tmp_path / "tr", crop=True
    )
    val = write_coco(
        generate_shapes("val", n_val, 96, 0), tmp_path / "val.json", tmp_path / "va", crop=True, seed=1
    )
    return [
        "--data",
        str(train),
        "--images",
        str(tmp_path / "tr"),
        "--val-data",
        str(val),
        "--val-images",
        str(tmp_path / "va"),
    ]


@pytest.mark.slow
def test_train_and_eval_on_two_coco_files_with_a_local_pretrained_backbone(tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    data = _coco_two_files(tmp_path)
    out = tmp_path / "run"
    args = [
        "train",
        *data,
        "--backbone",
        "resnet18",
        "--backbone-weights",
        str(weights),
        "--resize",
        "keep-aspect",
        "--min-size",
        "64",
        "--max-size",
        "96",
        "--iterations",
        "4",
        "--batch-size",
        "4",
        "--train-subset",
        "12",
        "--out",
        str(out),
        "--json",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    trained = json.loads(r.output)
    assert trained["status"] == "ok" and set(trained["metrics"]) >= {"AP", "APs", "APm", "APl"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["val_data"].endswith("val.json") and saved["train_subset"] == 12
    assert saved["resize"] == "keep-aspect" and saved["backbone_weights"] == str(weights)
    # eval rebuilds the same detector from config.yaml (no backbone file needed: the weights hold it)
    r = CliRunner().invoke(cli, ["eval", "--weights", str(out / "weights.pt"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["metrics"] == pytest.approx(trained["metrics"], abs=1e-9)


def test_train_refuses_bad_coco_settings_in_one_line(tmp_path):
    data = _coco_two_files(tmp_path, 4, 2)
    r = CliRunner().invoke(
        cli, ["train", *data, "--resize", "keep-aspect", "--min-size", "200", "--max-size", "100"]
    )
    assert r.exit_code == 2 and "min_size" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["train", "--data", data[1], "--val-images", data[7]])
    assert r.exit_code == 2 and "--val-images needs --val-data" in r.output


@pytest.mark.slow
def test_a_search_on_two_coco_files(tmp_path):
    data = _coco_two_files(tmp_path)
    out = tmp_path / "search"
    # One generation of ten-iteration trainings: enough to train every kind of unit on the two files.
    args = ["search", "--budget", "smoke", *data, "--image-size", "64", "--backend", "serial"]
    args += ["--generations", "1", "--proxy-iterations", "10"]
    r = CliRunner().invoke(cli, [*args, "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table"]["default"]["mean"] > 0.0  # the default trained on this data and found objects
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    settings = cfg["task"]["settings"]
    assert settings["val_data"].endswith("val.json") and settings["image_size"] == 64
    records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert records and all(
        r["result"]["config"]["val_data"].endswith("val.json") for r in records if "config" in r["result"]
    )


def test_a_coco_preset_without_data_is_one_line():
    r = CliRunner().invoke(cli, ["train", "--preset", "fcos-r50-coco"])
    assert r.exit_code == 2 and "pass --data TRAIN.json" in r.output and "Traceback" not in r.output
