"""Fitness: the one number every selection reads (rungs, promotion, parents, the hall of fame, `best/`).

On one proxy task it is the COCO AP on search-val of a finished training (0 for one that diverged or
failed). On several (`--proxy-task`, repeatable) it is the mean over tasks of the candidate's AP divided by
the default loss's mean AP over the same rung's seeds on the same task: a relative score, so that a dense
dataset with AP 0.35 and a sparse one with AP 0.09 weigh alike, and 1.0 means "as good as the default".
A candidate that diverges or fails on any task is a diverged / failed candidate, with the task named.

`combine` turns the per-task results of one (losses, seed) into the one result the search reads; the
per-task APs travel with it (`tasks`), into events, the checkpoint and the report.
"""

from __future__ import annotations

import statistics
from typing import Any


def ap_of(result: dict[str, Any]) -> float:
    """The fitness of a result: COCO AP (or the combined relative AP), 0 for one that diverged or failed."""
    if result.get("status") != "ok":
        return 0.0
    return float(result.get("metrics", {}).get("AP", 0.0))


def combine(per_task: dict[str, dict[str, Any]], default_aps: dict[str, list[float]]) -> dict[str, Any]:
    """One result from a candidate's results on each task (`per_task`, in task order) and the default
    loss's APs on each task over the rung's seeds (`default_aps`).

    status: "failed" if any task failed, else "diverged" if any diverged, else "ok"; the reason names the
    first such task. metrics["AP"]: mean over tasks of AP / mean default AP. A task whose default did not
    train (mean AP 0) cannot normalise anything: the candidate is failed, with that reason.
    """
    tasks: dict[str, dict[str, Any]] = {}
    status, reason = "ok", ""
    ratios = []
    seconds = 0.0
    for name, result in per_task.items():
        ref = statistics.fmean(default_aps[name]) if default_aps.get(name) else 0.0
        st = result.get("status", "failed")
        ap = ap_of(result)
        tasks[name] = {"status": st, "ap": ap, "default_ap": ref, "reason": result.get("reason", "")}
        seconds += float(result.get("seconds") or 0.0)
        if st != "ok":
            if status == "ok" or (status == "diverged" and st == "failed"):
                status, reason = st, f"{st} on task {name}: {result.get('reason', '')}".rstrip(": ")
            continue
        if ref <= 0.0:
            if status == "ok":
                status = "failed"
                reason = f"the default loss has AP 0 on task {name}: no reference to score against"
            continue
        ratios.append(ap / ref)
    metrics = {"AP": statistics.fmean(ratios)} if status == "ok" else {}
    return {
        "status": status,
        "reason": reason,
        "metrics": metrics,
        "tasks": tasks,
        "iterations": 0,
        "seconds": seconds,
        "final_loss": None,
    }


def worst_task(tasks_by_seed: list[dict[str, dict[str, Any]]]) -> tuple[str, float] | None:
    """(task, mean AP / default AP over seeds) of the task a candidate does worst on, from the `tasks` of its
    results; None for single-task results."""
    if not tasks_by_seed or not all(tasks_by_seed):
        return None
    ratios: dict[str, list[float]] = {}
    for tasks in tasks_by_seed:
        for name, t in tasks.items():
            if t["default_ap"] > 0:
                ratios.setdefault(name, []).append(t["ap"] / t["default_ap"])
    if not ratios:
        return None
    name = min(ratios, key=lambda n: (statistics.fmean(ratios[n]), n))
    return name, statistics.fmean(ratios[name])
