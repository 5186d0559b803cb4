"""A run records the hashes of its input files, and a resume against changed ones is refused (unless
`--allow-changed-data`, which is recorded). The proxy is the stand-in task, given a data file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import autoloss
from autoloss.cli import cli
from autoloss.evolution.api import resume_search
from autoloss.runs.fingerprint import changes, fingerprint
from autoloss.runs.rundir import RunDirError
from autoloss.tasks import load_task
from search_helpers import ECHO

TINY = {"evolution": {"branch": "cls", "generations": 1, "offspring": 60, "top_k": 1, "parents": 1}}


def _search(tmp_path: Path, data: Path) -> Path:
    out = tmp_path / "run"
    autoloss.search(
        out,
        budget="smoke",
        task={"name": f"{ECHO}:make_task", "iterations": 3, "settings": {"data_file": str(data)}},
        backend={"backend": "serial", "workers": 1},
        **TINY,
    )
    return out


def test_a_changed_data_file_stops_a_resume_until_it_is_allowed(tmp_path):
    data = tmp_path / "train.json"
    data.write_text('{"images": []}')
    run = _search(tmp_path, data)
    recorded = json.loads((run / "inputs.json").read_text())
    assert recorded["files"][str(data)]["bytes"] == len('{"images": []}')
    assert recorded["accepted_changes"] == []
    resume_search(run)  # unchanged: resumes (and finds everything done)

    data.write_text('{"images": [1]}')
    with pytest.raises(RunDirError, match=r"changed since the run started: .*train.json: changed \(sha256"):
        resume_search(run)
    result = CliRunner().invoke(cli, ["resume", str(run), "--quiet"])
    assert result.exit_code == 2 and "--allow-changed-data" in result.output
    assert len(result.output.strip().splitlines()) == 1

    resume_search(run, allow_changed_data=True)
    after = json.loads((run / "inputs.json").read_text())
    assert after["files"] == fingerprint([str(data)])  # later resumes compare against the new data
    (change,) = after["accepted_changes"]
    assert "train.json: changed" in change["changes"][0] and change["files_before"] == recorded["files"]
    resume_search(run)  # accepted: no longer refused

    data.unlink()
    with pytest.raises(RunDirError, match="missing now"):
        resume_search(run)


def test_a_run_from_before_fingerprints_records_them_on_its_first_resume(tmp_path):
    data = tmp_path / "train.json"
    data.write_text("{}")
    run = _search(tmp_path, data)
    (run / "inputs.json").unlink()
    resume_search(run)
    assert json.loads((run / "inputs.json").read_text())["files"] == fingerprint([str(data)])


def test_the_detection_task_names_its_annotation_and_weight_files(tmp_path):
    train, val, weights = (tmp_path / n for n in ("train.json", "val.json", "w.pth"))
    for f in (train, val, weights):
        f.write_text("x")
    settings = {
        "preset": "fcos-shapes",
        "data": str(train),
        "val_data": str(val),
        "backbone_weights": str(weights),
    }
    assert load_task("detection", settings).input_files() == [str(train), str(val), str(weights)]
    assert load_task("detection", {"preset": "fcos-shapes", "data": "shapes-dense"}).input_files() == []


def test_changes_name_each_kind_of_difference():
    a = {"x": {"sha256": "0" * 64, "bytes": 1}, "y": {"sha256": "1" * 64, "bytes": 2}}
    b = {"x": {"sha256": "f" * 64, "bytes": 3}, "z": {"missing": True}}
    assert changes(a, a) == []
    assert changes(a, b) == [
        "x: changed (sha256 000000000000…, 1 bytes when the run started; ffffffffffff…, 3 bytes now)",
        "y: no longer an input",
        "z: not an input when the run started",
    ]
