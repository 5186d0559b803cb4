"""Progress on long work: the ETA arithmetic by hand, a search's plan by hand, and the progress events of
fidelity and transfer runs (through the stand-in task: no detector is trained)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.evolution.config import budget_config
from autoloss.evolution.progress import (
    SearchProgress,
    Tally,
    WorkClock,
    eta_seconds,
    format_duration,
    search_plan,
)
from search_helpers import ECHO

SMOKE_UNITS = ["baseline", "cls-sigmoid:0", "cls-sigmoid:1", "reg:0", "reg:1", "combine", "final"]


def echo_smoke(**evolution):
    return budget_config("smoke").replace(
        task={"name": f"{ECHO}:make_task"}, evolution=evolution, backend={"workers": 2}
    )


def test_eta_is_work_left_at_the_measured_rate_shared_by_the_workers():
    assert eta_seconds(10, 30.0, 2) == 150.0  # 10 units x 30 s, two at a time
    assert eta_seconds(10, 30.0, 0) == 300.0  # no workers reported: one
    assert eta_seconds(0, None, 2) == 0.0  # nothing left: done, timed or not
    assert eta_seconds(5, None, 2) is None  # nothing timed yet: unknown, not zero


def test_the_clock_weighs_trainings_by_their_length():
    clock = WorkClock()
    clock.add(60.0, 2)  # a 2x training of 60 s
    clock.add(30.0, 1)
    clock.add(None, 1)  # a result without a time says nothing
    assert clock.per_work == 30.0  # 90 s for 3 proxy lengths
    assert clock.per_training == 45.0


def test_a_tally_counts_cached_trainings_as_done_but_not_as_timed():
    # 4 trainings: two of 1 unit, two of 5 (a target 5x the proxy's length); 2 workers.
    tally = Tally(4, 12, workers=2)
    est = tally.trained(10.0, 1)
    assert (est.done, est.total, est.seconds_per_training) == (1, 4, 10.0)
    assert est.eta_s == 11 * 10.0 / 2  # 11 units left at 10 s each
    est = tally.cached(1, 1)
    assert (est.done, est.eta_s) == (2, 10 * 10.0 / 2)
    est = tally.trained(100.0, 5)  # 110 s for 6 units
    assert est.eta_s == pytest.approx(5 * 110 / 6 / 2)
    assert tally.trained(50.0, 5).eta_s == 0.0 and tally.estimate().left == 0


def test_the_smoke_search_plan_by_hand():
    plan = search_plan(echo_smoke(), SMOKE_UNITS)
    # baseline: the default and 5 named losses (bce, cse-b-cls; iou, cse-a-reg, cse-b-reg), 1 seed at 1x.
    # cls-sigmoid: 3 anchors + 2 per generation at rung 0; rung 1 (2x on 2 seeds, cost 4) takes
    # floor(0.34 x 5) = 1 after generation 0 and floor(0.34 x 7) = 2 after generation 1: one new each.
    # reg: 4 anchors; floor(0.34 x 6) = 2, then floor(0.34 x 8) = 2: two new, then none.
    # combine: 1 x 1 pair through both rungs (1 + 4); final: 4 pairs x 2 seeds x 2x = 16.
    assert plan == {
        "baseline": 6,
        "cls-sigmoid:0": 2 + 4,
        "cls-sigmoid:1": 2 + 4,
        "reg:0": 2 + 2 * 4,
        "reg:1": 2,
        "combine": 5,
        "final": 16,
    }


def test_a_three_rung_plan_by_hand():
    cfg = echo_smoke(branch="reg", rungs="1x1,2x2,4x1", top_k=3, promote=0.5, final_seeds=3)
    plan = search_plan(cfg, ["baseline", "reg:0", "reg:1", "final"])
    # rung costs 1, 4, 4. reg:0: 4 anchors + 3 = 7 at rung 0 -> 3 at rung 1 -> 1 at rung 2.
    # reg:1: 10 -> 5 -> 2: 2 new at rung 1, 1 new at rung 2. final: 4 pairs x 3 seeds x 4x.
    assert plan == {"baseline": 4, "reg:0": 3 + 3 * 4 + 4, "reg:1": 3 + 2 * 4 + 4, "final": 48}
    two_tasks = cfg.replace(task={"proxy_tasks": ["fcos:shapes:64:10", "fcos:shapes:96:10"]})
    assert search_plan(two_tasks, ["reg:0"]) == {"reg:0": 2 * 19}  # every training once per task


def _proxy_done(seconds: float, multiplier: int = 1) -> dict:
    return {"type": "proxy-done", "multiplier": multiplier, "result": {"seconds": seconds}}


def test_search_progress_replans_as_units_finish():
    tracker = SearchProgress(echo_smoke())
    tracker.update({"type": "start", "units": SMOKE_UNITS, "completed": [], "proxy_count": 0, "workers": 2})
    est = tracker.estimate()
    assert (est.done, est.total, est.eta_s) == (0, 51, None)  # the plan above; nothing timed
    tracker.update({"type": "unit", "unit": "baseline"})
    for _ in range(6):
        tracker.update(_proxy_done(10.0))
    est = tracker.estimate()
    assert (est.done, est.total, est.seconds_per_training) == (6, 51, 10.0)
    assert est.eta_s == 45 * 10.0 / 2
    tracker.update({"type": "unit-done", "unit": "baseline", "proxy_count": 6})
    tracker.update({"type": "unit", "unit": "cls-sigmoid:0"})
    tracker.update(_proxy_done(12.0))
    tracker.update(_proxy_done(52.0, multiplier=2))  # 2x: two proxy lengths
    est = tracker.estimate()
    assert (est.done, est.total) == (9, 51)
    assert est.seconds_per_training == pytest.approx(124 / 9)  # 124 s for 9 proxy lengths
    # The generation spent 3 where 6 were planned: from now on the plan counts what it spent.
    tracker.update({"type": "unit-done", "unit": "cls-sigmoid:0", "proxy_count": 9})
    assert (tracker.estimate().done, tracker.estimate().total) == (9, 9 + 6 + 10 + 2 + 5 + 16)


def test_a_resumed_search_starts_from_what_it_had_spent():
    tracker = SearchProgress(echo_smoke())
    tracker.update(
        {"type": "start", "units": SMOKE_UNITS, "completed": SMOKE_UNITS[:2], "proxy_count": 8, "workers": 1}
    )
    est = tracker.estimate()
    assert (est.done, est.total, est.workers) == (8, 8 + 6 + 10 + 2 + 5 + 16, 1)


def test_the_budget_caps_the_plan_and_a_skip_drops_the_generations_left():
    tracker = SearchProgress(echo_smoke(max_proxy_evals=30))
    tracker.update({"type": "start", "units": SMOKE_UNITS, "completed": [], "proxy_count": 0})
    assert tracker.estimate().total == 30
    tracker = SearchProgress(echo_smoke())
    tracker.update({"type": "start", "units": SMOKE_UNITS, "completed": SMOKE_UNITS[:3], "proxy_count": 20})
    tracker.update({"type": "unit", "unit": "reg:0"})
    tracker.update({"type": "skipped", "unit": "reg:0", "reason": "time limit of 60 s reached"})
    assert tracker.estimate().total == 20 + 16  # only the final is left


def test_a_time_limit_shortens_the_eta_to_the_limit_plus_the_final():
    tracker = SearchProgress(echo_smoke(time_limit_s=100.0))
    tracker.update(
        {
            "type": "start",
            "units": SMOKE_UNITS,
            "completed": [],
            "proxy_count": 0,
            "workers": 2,
            "elapsed_s": 40,
        }
    )
    tracker.update({"type": "unit", "unit": "baseline"})
    tracker.update(_proxy_done(10.0))
    assert tracker.estimate().eta_s == 50 * 10.0 / 2  # no clock given: the plan alone
    # 40 s before this process, 20 s in it: 40 s left of the limit, then the final (16 x 10 s / 2).
    assert tracker.estimate(elapsed_s=20.0).eta_s == 40.0 + 80.0


def test_durations_read_well():
    assert [format_duration(s) for s in (None, 30.4, 95, 3599, 7300)] == [
        "?",
        "30s",
        "1m35s",
        "59m59s",
        "2h01m",
    ]


def test_transfer_reports_every_training_and_then_the_cache(tmp_path):
    from autoloss.transfer.plan import plan_transfer
    from autoloss.transfer.run import run_transfer

    plan = plan_transfer("bce", None, ["fcos"], ["shapes"], seeds=2, named=False)  # 3 rows x 2 seeds
    kwargs = dict(iterations=2, schedule=1, backend="serial", workers=1, task=f"{ECHO}:make_task")
    events: list[dict] = []
    run_transfer(plan, tmp_path, progress=events.append, **kwargs)
    assert [e["type"] for e in events] == ["training"] * 6
    assert [e["done"] for e in events] == [1, 2, 3, 4, 5, 6] and {e["total"] for e in events} == {6}
    assert events[-1]["eta_s"] == 0.0 and events[-1]["left"] == 0
    assert all(e["record"]["split"] == "test" for e in events)
    again: list[dict] = []
    run_transfer(plan, tmp_path, progress=again.append, **kwargs)  # every result from the cell's cache
    assert [(e["type"], e["count"], e["done"], e["total"]) for e in again] == [("cached", 6, 6, 6)]


def test_a_fidelity_panel_reports_done_up_to_its_total(tmp_path):
    from autoloss.fidelity import parse_task, train_panel

    tasks = [
        parse_task("fcos:shapes:64:10", task=f"{ECHO}:make_task"),
        parse_task("fcos:shapes:64:20", task=f"{ECHO}:make_task", split="test"),
    ]
    pairs = [("default", "default"), ("bce", "default"), ("default", "iou")]
    events: list[dict] = []
    train_panel(tasks, pairs, [0, 1], tmp_path, backend="serial", workers=1, progress=events.append)
    assert [e["done"] for e in events] == list(range(1, 13)) and {e["total"] for e in events} == {12}
    assert all(e["type"] == "training" for e in events) and events[-1]["left"] == 0


def test_transfer_cli_prints_a_line_per_training_unless_quiet(tmp_path):
    args = ["transfer", "--task", f"{ECHO}:make_task", "--cls-loss", "bce", "--detectors", "fcos"]
    args += ["--data", "shapes", "--seeds", "2", "--iterations", "2", "--schedule", "1", "--no-named"]
    args += ["--backend", "serial"]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if line.strip().startswith("[")]
    assert [line.split()[0] for line in lines] == [f"[{i}/6]" for i in range(1, 7)]
    assert "ETA" in lines[0]
    r = CliRunner().invoke(cli, [*args, "--quiet", "--out", str(tmp_path / "b")])
    assert r.exit_code == 0 and "[1/6]" not in r.output and "transfer: 6 trainings" not in r.output


def test_a_search_logs_its_progress_and_the_eta_can_be_judged_from_it(tmp_path):
    import importlib.util
    import itertools
    import json
    from pathlib import Path

    from autoloss.evolution.api import run_search

    summary, run = run_search(
        echo_smoke().replace(backend={"backend": "serial", "workers": 1}), tmp_path / "r"
    )
    lines = [json.loads(x) for x in (Path(run.path) / "progress.jsonl").read_text().splitlines()]
    assert lines[0]["event"] == "start" and lines[0]["done"] == 0
    trained = [x for x in lines if x["event"] == "proxy-done"]
    assert len(trained) == len((Path(run.path) / "evaluations.jsonl").read_text().splitlines())
    assert [x["elapsed_s"] for x in lines] == sorted(x["elapsed_s"] for x in lines)
    # Done only grows, and the search ends where its plan does: everything done, nothing left.
    assert all(a["done"] <= b["done"] for a, b in itertools.pairwise(lines))
    last = lines[-1]
    assert (last["event"], last["unit"], last["left"], last["eta_s"]) == ("unit-done", "final", 0, 0.0)
    assert last["done"] == summary["proxy_trainings"]

    spec = importlib.util.spec_from_file_location("eta", Path(__file__).parent.parent / "bench" / "eta.py")
    eta = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eta)
    assert eta.read_log(Path(run.path)) == lines
    # By hand: 100 s in all; at 30 % done (30 s in) it said 140 s were left where 70 were: +100 %.
    log = [
        {"done": 0, "total": 10, "eta_s": None, "elapsed_s": 0.0},
        {"done": 1, "total": 10, "eta_s": 90.0, "elapsed_s": 10.0},
        {"done": 3, "total": 10, "eta_s": 140.0, "elapsed_s": 30.0},
        {"done": 10, "total": 10, "eta_s": 0.0, "elapsed_s": 100.0},
    ]
    ten, quarter, never = eta.eta_errors(log, [0.1, 0.25, 1.5])
    assert ten["error"] == 0.0 and ten["actual_s"] == 90.0
    assert quarter["error"] == pytest.approx(1.0) and quarter["done"] == 3
    assert never == {"share": 1.5, "reached": False}


def test_the_long_budget_plans_about_four_times_the_default_on_the_same_tasks():
    from autoloss.evolution.config import validate

    def units(cfg):
        gens = [f"{b}:{g}" for g in range(cfg.evolution.generations) for b in ("cls-sigmoid", "reg")]
        return ["baseline", *gens, "combine", "final"]

    default, long = budget_config("default"), budget_config("long")
    validate(long)
    assert long.task.proxy_tasks == default.task.proxy_tasks
    planned = {name: sum(search_plan(c, units(c)).values()) for name, c in (("d", default), ("l", long))}
    assert planned == {"d": 150, "l": 616}  # 4.1x: about 2 hours where the default takes 30 minutes
    # Every rung on 2 seeds, the final at the top rung's 3x on 5 held-out seeds (4 pairs x 5 x 3 x 2 tasks).
    assert search_plan(long, units(long))["final"] == 120
