"""Several proxy tasks at once: the relative fitness by hand, the runner's per-task trainings and cache, and a
whole search on the stand-in task with two tasks (killed mid-rung and resumed to the same result)."""

from __future__ import annotations

import json
import statistics

import pytest

import autoloss
from autoloss.evolution.config import ConfigError, SearchConfig, validate
from autoloss.evolution.fitness import combine, worst_task
from autoloss.runs.rundir import RunDir
from search_helpers import ECHO, kill_search_after, serial_runner

TASKS = ["fcos:shapes:64:10", "fcos:shapes-dense:64:20"]


def _ok(ap: float) -> dict:
    return {"status": "ok", "reason": "", "metrics": {"AP": ap}, "seconds": 1.0}


def test_fitness_is_the_mean_ap_relative_to_the_default_by_hand():
    defaults = {"a": [0.20, 0.30], "b": [0.05, 0.15]}  # default means 0.25 and 0.10
    r = combine({"a": _ok(0.30), "b": _ok(0.08)}, defaults)
    # (0.30 / 0.25 + 0.08 / 0.10) / 2 = (1.2 + 0.8) / 2 = 1.0
    assert r["status"] == "ok" and r["metrics"]["AP"] == pytest.approx(1.0)
    assert r["tasks"]["a"] == {"status": "ok", "ap": 0.30, "default_ap": pytest.approx(0.25), "reason": ""}
    r = combine({"a": _ok(0.50), "b": _ok(0.10)}, defaults)
    assert r["metrics"]["AP"] == pytest.approx((2.0 + 1.0) / 2)
    # a task that diverged: the candidate diverged, with the task named; no fitness
    diverged = {"status": "diverged", "reason": "loss became nan at iteration 7", "metrics": {}}
    r = combine({"a": _ok(0.9), "b": diverged}, defaults)
    assert r["status"] == "diverged" and r["metrics"] == {}
    assert r["reason"] == "diverged on task b: loss became nan at iteration 7"
    # a failure outranks a divergence in the status; the reason names the failed task
    failed = {"status": "failed", "reason": "worker died", "metrics": {}}
    assert combine({"a": diverged, "b": failed}, defaults)["reason"] == "failed on task b: worker died"
    # a default that did not train gives nothing to score against
    r = combine({"a": _ok(0.3), "b": _ok(0.1)}, {"a": [0.2], "b": [0.0]})
    assert r["status"] == "failed" and "default loss has AP 0 on task b" in r["reason"]


def test_worst_task_is_the_lowest_relative_ap_over_seeds():
    seeds = [
        {"a": {"ap": 0.3, "default_ap": 0.25}, "b": {"ap": 0.05, "default_ap": 0.10}},
        {"a": {"ap": 0.2, "default_ap": 0.25}, "b": {"ap": 0.12, "default_ap": 0.10}},
    ]
    # a: (1.2 + 0.8) / 2 = 1.0; b: (0.5 + 1.2) / 2 = 0.85
    name, ratio = worst_task(seeds)
    assert name == "b" and ratio == pytest.approx(0.85)
    assert worst_task([{}]) is None


def _cfg(**task) -> SearchConfig:
    return SearchConfig().replace(task={"name": f"{ECHO}:make_task", "proxy_tasks": TASKS, **task})


def test_runner_trains_each_task_and_its_default_once_and_scores_relative(tmp_path):
    from echo_task import expected_ap  # importable once search_helpers put tests/tasks on the path

    from autoloss.evolution.work import proxy_task

    calls = []

    def counting(spec, c, r):
        calls.append((spec["schedule"]["iterations"], c, r, spec["schedule"]["seed"]))
        return proxy_task(spec, c, r)

    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    runner = serial_runner(_cfg(), run, counting)
    results = runner.evaluate([("bce", "giou", 0), ("bce", "giou", 1)])
    for seed, result in zip((0, 1), results, strict=True):
        expected = statistics.fmean(
            expected_ap("bce", "giou", seed, it)
            / statistics.fmean(expected_ap("default", "default", s, it) for s in (0, 1))
            for it in (10, 20)
        )
        assert result["metrics"]["AP"] == pytest.approx(expected)
        assert set(result["tasks"]) == set(TASKS)
    # 2 tasks x (2 candidate seeds + 2 default seeds), task-major so a worker keeps one task's data
    assert len(calls) == 8 and [c[0] for c in calls] == [10] * 4 + [20] * 4
    ids = [json.loads(line)["id"] for line in (run.path / "evaluations.jsonl").read_text().splitlines()]
    assert all(i.split("#")[0] in TASKS for i in ids) and len(set(ids)) == 8
    assert runner.count == 4  # 2 jobs x 2 tasks, at 1x
    # the default per task and seed is cached: another candidate trains only itself
    runner.evaluate([("focal", "giou", 0), ("focal", "giou", 1)])
    assert len(calls) == 12


def test_bad_proxy_tasks_are_refused():
    with pytest.raises(ConfigError, match="DETECTOR:DATA:SIZE:ITERATIONS"):
        validate(_cfg(proxy_tasks=["fcos:shapes:64"]))
    with pytest.raises(ConfigError, match="one classification branch"):
        validate(_cfg(proxy_tasks=["fcos:shapes:64:5", "faster_rcnn:shapes:64:5"]))
    with pytest.raises(ConfigError, match="given twice"):
        validate(_cfg(proxy_tasks=["fcos:shapes:64:5", "fcos:shapes:64:5"]))


SEARCH = {
    "evolution": {
        "branch": "reg",
        "generations": 1,
        "offspring": 120,
        "top_k": 2,
        "parents": 1,
        "final_seeds": 3,
    },
    "task": {"name": f"{ECHO}:make_task", "proxy_tasks": TASKS},
    "backend": {"backend": "serial"},
}


def test_a_search_on_two_tasks_records_each_task_and_reports_the_worst(tmp_path):
    summary = autoloss.search(tmp_path / "run", budget="smoke", **SEARCH)
    found = summary["table"]["found"]
    assert set(found["per_task"]) == set(TASKS) and summary["split"] == "test"
    assert found["worst_task"][0] in TASKS
    default = summary["table"]["default"]
    # the default's fitness per seed averages 1 over its own seeds on each task, by construction
    assert statistics.fmean(default["ap"]) == pytest.approx(1.0, abs=0.05)
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    trained = [e for e in events if e.get("stage") in ("anchor", "proxy")]
    assert trained and all(set(e["task_aps"]) == set(TASKS) for e in trained)
    text = (tmp_path / "run" / "best" / "summary.md").read_text()
    assert "worst task" in text and TASKS[1] in text and "test split" in text


@pytest.mark.slow
def test_two_tasks_killed_mid_rung_resume_to_the_same_result(tmp_path):
    args = [
        "--task", f"{ECHO}:make_task", "--budget", "smoke", "--branch", "reg", "--generations", "1",
        "--offspring", "120", "--top-k", "2", "--final-seeds", "3", "--backend", "process",
        "--proxy-task", TASKS[0], "--proxy-task", TASKS[1],
    ]  # fmt: skip
    whole = tmp_path / "whole"
    kill_search_after(args, whole, finished=10**6)  # runs to the end
    killed = tmp_path / "killed"
    finished = kill_search_after(args, killed, finished=14)  # past the anchors, inside rung 0 or 1
    assert finished >= 14 and not (killed / "summary.json").exists()
    from autoloss.evolution.api import resume_search

    resume_search(killed)
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["table"]["found"]["ap"] == b["table"]["found"]["ap"]
    assert (whole / "hall_of_fame.csv").read_text() == (killed / "hall_of_fame.csv").read_text()
    ids = [json.loads(line)["id"] for line in (killed / "evaluations.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))  # nothing trained twice


def test_the_budget_counts_a_candidate_once_per_task(tmp_path):
    from autoloss.evolution.config import budget_config
    from autoloss.evolution.driver import reserved_costs

    # The anchors cost 4 pairs x 2 tasks = 8 and the final is reserved (at most 5 pairs x 3 seeds x 2x x 2
    # tasks = 60); one unit is left, and one more candidate would cost 2 (one per task).
    baseline, final = reserved_costs(budget_config("smoke").replace(**SEARCH))
    assert (baseline, final) == (8, 60)
    search = {**SEARCH, "evolution": {**SEARCH["evolution"], "max_proxy_evals": 69, "final_seeds": 3}}
    summary = autoloss.search(tmp_path / "run", budget="smoke", **search)
    records = [json.loads(x) for x in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    rungs = [r for r in records if r.get("split", "val") == "val"]
    assert sum(r["multiplier"] for r in rungs) == 8 and all(r["task"] in TASKS for r in rungs)
    assert summary["proxy_trainings"] <= 69  # the final included
