"""The search report (`autoloss report`): what it measures about the run's own stages, the finalists' rung
history and loss curves."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from autoloss.report import write_report
from autoloss.report.finalists import finalist_losses, rung_fitness
from autoloss.report.markdown import stage_fidelity
from autoloss.runs.rundir import RunDir
from autoloss.spaces.named import NAMED, PUBLISHED
from search_helpers import ECHO

# A tiny search through the stand-in task (tests/tasks/echo_task.py: it trains nothing, so the search takes
# seconds): both branches, two rungs and a final on two held-out seeds.
ECHO_SEARCH = [
    *("--task", f"{ECHO}:make_task", "--budget", "smoke", "--branch", "both", "--generations", "1"),
    *("--offspring", "60", "--top-k", "2", "--parents", "2", "--rungs", "1x1,2x2", "--final-seeds", "2"),
    *("--proxy-iterations", "5", "--backend", "serial", "--quiet"),
]


def test_the_report_ranks_mos_against_rung0_map_within_each_branch(tmp_path):
    """cls and reg MOS scores live on different scales: pooled, τ would mostly say which branch a
    candidate is in, so the report gives one row per branch."""

    run = RunDir.create(tmp_path / "run", {"evolution": {}})
    events = []
    for k in range(5):  # within each branch MOS ranks mAP perfectly; across branches it would not
        events.append(
            {
                "stage": "proxy",
                "branch": "cls-sigmoid",
                "status": "ok",
                "mos_score": 0.2 + k / 100,
                "ap": 0.10 + k / 100,
            }
        )
        events.append(
            {
                "stage": "proxy",
                "branch": "reg",
                "status": "ok",
                "mos_score": 0.9 + k / 100,
                "ap": 0.02 + k / 100,
            }
        )
    run.append("events.jsonl", events)
    rows = [line for line in stage_fidelity(run) if line.startswith("| MOS score")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| MOS score -> rung 0 mAP (cls-sigmoid)",
        "| MOS score -> rung 0 mAP (reg)",
    ]
    assert all(" | 5 | +1.00 " in row for row in rows)


# --- the finalists: their rung history and loss curves ------------------------------------------------

NEW_CLS = "Mul(NY,Softplus(X))"  # stand-ins for searched expressions (their texts are all that matters)
NEW_REG = "Cos(Div(Div(I,E),Add(2,2)))"
OTHER_REG = "Sub(1,Div(I,E))"


def _summary(cls_branch: str, found: tuple[str, str]) -> dict:
    published = PUBLISHED[cls_branch]
    row = lambda c, r: {"cls": c, "reg": r}  # noqa: E731
    return {
        "table": {
            "default": row("default", "default"),
            "published": row(NAMED[published[0]].text, NAMED[published[1]].text),
            "best named": row(NAMED["bce" if cls_branch == "cls-sigmoid" else "cse-a-cls"].text, "default"),
            "found": row(*found),
        },
        "found_novelty": {cls_branch: {"kind": "new"}, "reg": {"kind": "default"}},
    }


def _hall(*rows: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"branch": b, "text": t, "named": n, "failed_at": ""} for b, t, n in rows]


def test_the_curves_show_each_finalist_once_with_its_roles_and_the_best_new_expression():
    summary = _summary("cls-sigmoid", (NEW_CLS, "default"))
    hall = _hall(
        ("cls-sigmoid", "default", "default"),
        ("cls-sigmoid", NEW_CLS, ""),  # the found loss: not listed twice
        ("reg", NAMED["iou"].text, "iou"),
        ("reg", NEW_REG, ""),  # the best new reg expression, in no row of the final table
        ("reg", OTHER_REG, ""),  # ranked below it
    )
    got = finalist_losses(summary, hall)
    assert got == {
        "cls-sigmoid": {
            NAMED["focal"].text: ["default"],  # the stock loss, drawn as the named loss that computes it
            NAMED["cse-b-cls"].text: ["published"],
            NAMED["bce"].text: ["best named"],
            NEW_CLS: ["found"],
        },
        "reg": {
            NAMED["giou"].text: ["default"],
            NAMED["cse-b-reg"].text: ["published"],
            NEW_REG: ["best new"],
        },
    }


def test_a_two_stage_run_draws_no_default_reg_curve():
    """The RoI head's stock reg loss is smooth L1 on deltas: no function of I, U, E to draw."""
    summary = _summary("cls-softmax", (NAMED["cse-a-cls"].text, NEW_REG))
    got = finalist_losses(summary, _hall())
    assert got["cls-softmax"] == {
        NAMED["ce"].text: ["default"],
        NAMED["cse-a-cls"].text: ["published", "best named", "found"],
    }
    assert got["reg"] == {NAMED["cse-a-reg"].text: ["published"], NEW_REG: ["found"]}


def test_rung_fitness_with_several_tasks_is_ap_relative_to_the_default_on_the_same_seeds():
    def ev(cls_, task, seed, ap, status="ok", multiplier=2):
        result = {"status": status, "metrics": {"AP": ap} if status == "ok" else {}}
        return {
            "cls": cls_,
            "reg": "default",
            "seed": seed,
            "multiplier": multiplier,
            "task": task,
            "result": result,
        }

    rung = {"index": 1, "multiplier": 2, "seeds": [1, 2]}
    evaluations = [
        ev("default", "a", 1, 0.2),
        ev("default", "a", 2, 0.4),
        ev("default", "b", 1, 0.1),
        ev("default", "b", 2, 0.1),
        ev(NEW_CLS, "a", 1, 0.3),
        ev(NEW_CLS, "b", 1, 0.2),
        ev(NEW_CLS, "a", 2, 0.6),
        ev(NEW_CLS, "b", 2, 0.0, status="diverged"),
        ev(NEW_CLS, "a", 1, 0.9, multiplier=1),  # another rung's training
    ]
    mean, seeds, broke = rung_fitness(evaluations, (NEW_CLS, "default"), rung)
    # seed 1: (0.3 / 0.3 + 0.2 / 0.1) / 2 = 1.5; seed 2 diverged on task b: 0
    assert (round(mean, 6), seeds, broke) == (0.75, 2, {"diverged": 1})
    assert rung_fitness(evaluations, ("default", "default"), rung)[0] == pytest.approx(1.0)
    assert rung_fitness(evaluations, (NEW_REG, "default"), rung) is None


@pytest.fixture(scope="module")
def reported(tmp_path_factory) -> Path:
    """A whole (tiny) search through the stand-in task, which trains nothing, and its report."""
    out = tmp_path_factory.mktemp("report") / "run"
    subprocess.run([sys.executable, "-m", "autoloss", "search", *ECHO_SEARCH, "--out", str(out)], check=True)
    write_report(out)
    return out


def _table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (as cells, the header first) of the first table after `heading`."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        if not set(line) <= set("|-"):  # the header's rule
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


@pytest.mark.slow
def test_the_report_links_curve_pngs_that_exist_and_open(reported):
    markdown = (reported / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert {"curves_cls-sigmoid.png", "curves_reg.png"} <= set(links)
    for link in links:
        with Image.open(reported / link) as image:  # every linked figure is beside report.md and opens
            assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
            assert np.asarray(image.convert("L")).std() > 5  # not blank
    assert markdown.index("## Result") < markdown.index("## Loss curves of the finalists")


@pytest.mark.slow
def test_the_report_has_the_final_table_and_each_finalists_rung_history(reported):
    markdown = (reported / "report.md").read_text(encoding="utf-8")
    summary = json.loads((reported / "summary.json").read_text())
    final = _table(markdown, "## Result")
    assert final[0][:3] == ["losses", "cls", "reg"] and "95 % CI" in final[0][4]
    assert [r[0] for r in final[1:]] == list(summary["table"])
    rungs = _table(markdown, "## The finalists on the rungs")
    assert rungs[0] == ["losses", "rung 0 (1x, seed 0)", "rung 1 (2x, seeds 1, 2)"]
    assert [r[0] for r in rungs[1:]] == list(summary["table"])
    # each cell is the mean AP of that pair's search-val trainings at the rung, read back from the journal
    evaluations = [json.loads(line) for line in (reported / "evaluations.jsonl").read_text().splitlines()]
    for cells, row in zip(rungs[1:], summary["table"].values(), strict=True):
        for cell, rung in zip(cells[1:], summary["rungs"], strict=True):
            aps = [
                e["result"]["metrics"]["AP"]
                for e in evaluations
                if (e["cls"], e["reg"]) == (row["cls"], row["reg"])
                and e["multiplier"] == rung["multiplier"]
                and e["seed"] in rung["seeds"]
                and "split" not in e
            ]
            assert cell == (f"{sum(aps) / len(aps):.4f}" if aps else "—")
    assert rungs[1][1] != "—"  # the default trains at rung 0
