"""`autoloss transfer`: planning (branches, baselines, bad input) and a tiny real run end to end."""

from __future__ import annotations

import csv
import json

import pytest
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.spaces import NAMED
from autoloss.transfer.plan import TransferError, plan_transfer


def test_plan_has_defaults_published_found_and_named_baselines_per_branch():
    plan = plan_transfer("bce", None, ["fcos", "retinanet"], ["shapes"], 2)
    labels = [r.label for r in plan.rows["fcos"]]
    assert labels[:3] == ["default", "published", "found"]
    # The found pair (bce, default) is the bce baseline: trained once, as "found"; the named reg losses other
    # than the default are baselines too; the published ones have their own row.
    assert "bce" not in labels and "iou" in labels and "cse-a-reg" not in labels
    with_reg = [r.label for r in plan_transfer("bce", "cse-a-reg", ["fcos"], ["shapes"], 1).rows["fcos"]]
    assert "bce" in with_reg  # (bce, cse-a-reg) is a different pair from (bce, default)
    published = plan.rows["fcos"][1]
    assert (published.cls, published.reg) == (NAMED["cse-b-cls"].text, NAMED["cse-b-reg"].text)
    assert plan.trainings() == 2 * len(plan.rows["fcos"]) * 2


def test_two_stage_detectors_get_the_softmax_baselines():
    plan = plan_transfer(None, "giou", ["faster_rcnn"], ["shapes"], 1)
    rows = {r.label: r for r in plan.rows["faster_rcnn"]}
    assert rows["published"].cls == NAMED["cse-a-cls"].text
    # giou through the seam has a row of its own: stock loss and expression are compared, not assumed equal.
    assert rows["found"].reg == NAMED["giou"].text and rows["found"].cls == "default"
    assert "bce" not in rows and "focal" not in rows


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cls_loss": "cse-b-cls", "detectors": ["faster_rcnn"]}, "faster_rcnn needs a cls-softmax"),
        ({"cls_loss": "giou"}, "is a regression loss"),
        ({"detectors": ["yolo"]}, "unknown detector 'yolo'"),
        ({"datasets": ["nope.json"]}, "neither a dataset name .* nor an existing COCO JSON"),
        ({"seeds": 0}, "--seeds must be positive"),
    ],
)
def test_bad_requests_are_refused_with_the_fix(kwargs, message):
    args = {
        "cls_loss": None,
        "reg_loss": None,
        "detectors": ["fcos"],
        "datasets": ["shapes"],
        "seeds": 1,
        **kwargs,
    }
    with pytest.raises(TransferError, match=message):
        plan_transfer(args["cls_loss"], args["reg_loss"], args["detectors"], args["datasets"], args["seeds"])


def test_cli_wrong_branch_exits_2_with_one_line(tmp_path):
    r = CliRunner().invoke(
        cli, ["transfer", "--cls-loss", "ce", "--detectors", "fcos", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "fcos needs a cls-sigmoid" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_tiny_transfer_writes_tables_and_reuses_finished_trainings(tmp_path):
    args = [
        "transfer",
        "--cls-loss",
        "bce",
        "--detectors",
        "fcos",
        "--data",
        "shapes",
        "--seeds",
        "2",
        "--iterations",
        "8",
        "--batch-size",
        "4",
        "--schedule",
        "1",
        "--no-named",
        "--backend",
        "serial",
        "--out",
        str(tmp_path),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((tmp_path / "transfer.csv").open()))
    assert [row["label"] for row in rows] == ["default", "published", "found"]
    assert all(row["seeds"] == "0 1" for row in rows)
    assert rows[2]["gain_mean"] != "" and rows[0]["gain_mean"] == ""
    assert (tmp_path / "transfer.png").stat().st_size > 1000
    records = json.loads((tmp_path / "records.json").read_text())
    assert len(records) == 6 and all(rec["status"] in ("ok", "diverged", "failed") for rec in records)
    # A re-run trains nothing new: every result comes from the cell caches.
    cache = next((tmp_path / "cells").iterdir()) / "evaluations.jsonl"
    before = cache.read_text()
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and cache.read_text() == before


def test_transfer_and_fidelity_take_the_search_task_options(tmp_path):
    """--preset, --backbone-weights, --resize, training settings: the same flags and meaning as `search`,
    parsed by one function (cli.common.task_settings), and part of each cell's cache key."""
    from autoloss.fidelity.tasks import parse_task
    from autoloss.runs.cell_cache import identity
    from autoloss.transfer.run import cell_config

    extra = {"preset": "tiny", "train": {"lr": 0.01}, "image_size": 96}
    cfg = cell_config("fcos", "thermal", 10, None, "cpu", "tiny", extra=extra)
    resolved = cfg.load_task().config()
    assert resolved["preset"] == "tiny" and resolved["train"]["lr"] == 0.01 and resolved["image_size"] == 96
    assert resolved["data"] == "thermal"
    spec = parse_task("fcos:thermal:128:10", extra=extra)
    assert spec.config().load_task().config()["image_size"] == 128  # the task's own SIZE wins
    plain = parse_task("fcos:thermal:128:10")
    assert identity(spec.config()) != identity(plain.config())  # another setting: another cache
    r = CliRunner().invoke(
        cli,
        ["transfer", "--cls-loss", "bce", "--detectors", "fcos", "--data", "thermal", "--lr", "-1",
         "--out", str(tmp_path)],
    )  # fmt: skip
    assert r.exit_code == 2 and "lr" in r.output and "Traceback" not in r.output


def _search_run(path, rungs: str, seed: int, final_seeds: int):
    """A run directory as a finished search leaves it, as far as `transfer --from-run` reads it."""
    import yaml

    from autoloss.evolution.config import budget_config

    cfg = budget_config("smoke").replace(evolution={"rungs": rungs, "seed": seed, "final_seeds": final_seeds})
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (path / "best").mkdir()
    (path / "best" / "cls.json").write_text(json.dumps({"expr": "x", "text": "Neg(Log(Sig(X)))"}))
    (path / "best" / "reg.json").write_text(json.dumps({"expr": None, "text": "default"}))
    return path


def test_seeds_after_a_run_are_above_its_rung_and_final_seeds(tmp_path):
    from autoloss.transfer.plan import seeds_after_run

    # rungs use seeds 4 and 5-6, the final 7-11
    assert seeds_after_run(_search_run(tmp_path / "a", "1x1,2x2", seed=4, final_seeds=5)) == 12
    assert seeds_after_run(_search_run(tmp_path / "b", "1x3", seed=0, final_seeds=2)) == 5
    with pytest.raises(TransferError, match=r"no config\.yaml"):
        seeds_after_run(tmp_path / "nothing")


def test_transfer_from_a_run_trains_on_seeds_the_search_never_used(tmp_path):
    run = _search_run(tmp_path / "run", "1x1,2x2", seed=0, final_seeds=2)
    out = tmp_path / "transfer"
    args = ["transfer", "--from-run", str(run), "--detectors", "fcos", "--data", "shapes", "--preset", "tiny"]
    args += ["--seeds", "1", "--iterations", "2", "--batch-size", "2", "--no-named", "--backend", "serial"]
    r = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader((out / "transfer.csv").open()))
    assert {row["label"] for row in rows} == {"default", "published", "found"}
    assert all(row["seeds"] == "5" for row in rows)  # rungs used 0-2, the final 3-4
