"""The search report (`autoloss report`): what it measures about the run's own stages."""

from __future__ import annotations

from autoloss.report.markdown import stage_fidelity
from autoloss.runs.rundir import RunDir


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
