"""The README's own-detector example: written to a file outside the package, loaded by name, trained and
searched end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.tasks import Schedule, load_task

ROOT = Path(__file__).resolve().parents[1]


def readme_task(tmp_path: Path) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = text.find("<!-- readme-test: custom-task")
    assert marker >= 0
    block = re.compile(r"```python\n(.*?)```", re.S).search(text, marker)
    assert block is not None
    path = tmp_path / "elsewhere" / "my_task.py"
    path.parent.mkdir()
    path.write_text(block.group(1), encoding="utf-8")
    return f"{path}:make_task"


def test_the_example_task_builds_its_own_detector(tmp_path):
    task = load_task(readme_task(tmp_path), {"preset": "tiny"})
    assert type(task).__name__ == "ResNet18FCOS" and task.cls_branch == "cls-sigmoid"
    detector = task.build("default", "giou", seed=0)
    body = detector.model.backbone.body
    assert type(body.layer4[0]).__name__ == "BasicBlock"  # ResNet-18, not the built-in tiny backbone
    assert sum(p.numel() for p in detector.parameters()) > 10_000_000
    again = task.build("default", "giou", seed=0)
    assert all(
        (a == b).all()
        for a, b in zip(detector.state_dict().values(), again.state_dict().values(), strict=True)
    )
    result = task.run("bce", "giou", Schedule(iterations=2, seed=0))
    assert result.status == "ok" and "AP" in result.metrics, result.reason


@pytest.mark.slow
def test_a_tiny_search_with_the_example_task(tmp_path):
    name = readme_task(tmp_path)
    out = tmp_path / "run"
    r = CliRunner().invoke(
        cli,
        [
            "search",
            "--task",
            name,
            "--budget",
            "smoke",
            "--branch",
            "reg",
            "--generations",
            "1",
            "--offspring",
            "60",
            "--top-k",
            "1",
            "--parents",
            "1",
            "--final-seeds",
            "1",
            "--rungs",
            "1x1",
            "--proxy-iterations",
            "4",
            # ResNet-18 FPN is ~1 s a step at batch 8 on one core; the behaviour under test needs no more
            "--batch-size",
            "2",
            "--backend",
            "process",
            "--workers",
            "2",
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "found" in r.output
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["task"]["name"] == name and cfg["task"]["settings"]["preset"] == "tiny"
    records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert records and all(rec["result"]["status"] == "ok" for rec in records)
    r = CliRunner().invoke(
        cli, ["train", "--task", name, "--preset", "tiny", "--iterations", "3", "--batch-size", "2", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output[r.output.index("{") :])["status"] == "ok"
