"""Rungs: parsing, disjoint seeds, promotion counts, and what a longer rung costs the proxy runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoloss.evolution.config import ConfigError, budget_config, validate
from autoloss.evolution.proxy import EVALUATIONS, eval_id
from autoloss.evolution.rungs import RungError, held_out_seeds, ladder, parse_rungs, promote_count
from autoloss.runs.rundir import RunDir
from search_helpers import serial_runner


def test_parse_rungs_reads_multiplier_by_seeds():
    assert parse_rungs("1x1,3x2") == ((1, 1), (3, 2))
    assert parse_rungs(" 1x1 , 2x2, 6x3 ") == ((1, 1), (2, 2), (6, 3))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("3", "MULTIPLIERxSEEDS"),
        ("1x1,x2", "MULTIPLIERxSEEDS"),
        ("1x0", "positive"),
        ("3x1,1x2", "cannot train shorter"),
        ("1.5x2", "MULTIPLIERxSEEDS"),
    ],
)
def test_bad_rungs_are_refused_with_the_fix(text, message):
    with pytest.raises(RungError, match=message):
        parse_rungs(text)


def test_every_rung_and_the_final_get_their_own_seeds():
    rungs = ladder("1x1,3x2,9x3", base_seed=10)
    assert [r.seeds for r in rungs] == [(10,), (11, 12), (13, 14, 15)]
    assert [r.cost for r in rungs] == [1, 6, 27]
    final = held_out_seeds(rungs, 3)
    assert final == [16, 17, 18]
    used = {s for r in rungs for s in r.seeds}
    assert not used & set(final)


@pytest.mark.parametrize(("pool", "expected"), [(0, 0), (1, 1), (2, 1), (3, 1), (6, 2), (9, 3), (10, 3)])
def test_promote_count_is_the_fraction_floored_and_at_least_one(pool, expected):
    assert promote_count(pool, 0.34) == expected


def test_config_refuses_bad_rungs_and_promote():
    with pytest.raises(ConfigError, match="MULTIPLIERxSEEDS"):
        validate(budget_config("smoke").replace(evolution={"rungs": "abc"}))
    with pytest.raises(ConfigError, match="--promote must be a fraction"):
        validate(budget_config("smoke").replace(evolution={"promote": 1.5}))


def echo_length(experiment, cls_loss, reg_loss):
    """A stand-in training that reports the length it was asked for."""
    return {"status": "ok", "metrics": {"AP": 0.1}, "iterations": experiment["schedule"]["iterations"]}


def test_a_longer_rung_trains_longer_costs_more_and_is_cached_apart(tmp_path):
    cfg = budget_config("smoke")
    run = RunDir.create(tmp_path / "run", cfg.to_dict())
    runner = serial_runner(cfg, run, echo_length)
    base = runner.schedule.iterations
    [short] = runner.evaluate([("a", "b", 0)])
    [long] = runner.evaluate([("a", "b", 0)], multiplier=3)
    assert (short["iterations"], long["iterations"]) == (base, 3 * base)
    assert runner.count == 1 + 3  # the budget counts proxy-length trainings
    ids = [json.loads(line)["id"] for line in (Path(run.path) / EVALUATIONS).read_text().splitlines()]
    assert ids == [eval_id("a", "b", 0), eval_id("a", "b", 0, 3)] and ids[0] != ids[1]
    # Cached: asking again trains nothing, but still counts against the budget.
    runner.evaluate([("a", "b", 0)], multiplier=3)
    assert runner.count == 7
    assert len((Path(run.path) / EVALUATIONS).read_text().splitlines()) == 2


def test_a_candidate_that_breaks_on_a_longer_rung_ranks_as_failed(tmp_path):
    import csv

    from autoloss.evolution.api import run_search
    from search_helpers import ECHO

    # Every 10-iteration training (rung 1, the combination, the final) diverges; rung 0 (5) trains.
    cfg = budget_config("smoke").replace(
        evolution={"generations": 1, "rungs": "1x1,2x2", "final_seeds": 1},
        task={"name": f"{ECHO}:make_task", "settings": {"diverge_over": 5}, "iterations": 5},
        backend={"backend": "serial"},
    )
    summary, run = run_search(cfg, tmp_path / "run")
    path = Path(run.path)
    events = [json.loads(line) for line in (path / "events.jsonl").read_text().splitlines()]
    promotes = [e for e in events if e["stage"] == "promote"]
    assert promotes and all(e["failure"].startswith("diverged: iteration 7") for e in promotes)
    # Nothing reached rung 1, and what failed there ranks as failed: after every rung-0 success.
    hall = list(csv.DictReader((path / "hall_of_fame.csv").open()))
    assert hall and {row["rung"] for row in hall} == {"0"}
    promoted = {e["text"] for e in promotes}
    for branch in {row["branch"] for row in hall}:
        rows = [row for row in hall if row["branch"] == branch]
        failed = [bool(row["failed_at"]) for row in rows]
        assert failed == sorted(failed) and any(failed) and not all(failed)
        assert {row["text"] for row in rows if row["failed_at"]} <= promoted
        assert all(row["failed_at"].startswith("rung 1: diverged") for row in rows if row["failed_at"])
    # The winner trained well on every rung it was given: the best of the rung-0 entries never promoted.
    found = summary["table"]["found"]
    found_text = found["reg"] if found["cls"] == "default" else found["cls"]
    assert found_text not in promoted
    rung0 = {e["text"]: e["aps"][0] for e in events if e["stage"] in ("anchor", "proxy") and e["aps"]}
    assert rung0[found_text] == max(ap for text, ap in rung0.items() if text not in promoted)
    # The combined pair goes through the same rungs, each with its own status: it trains well on rung 0,
    # breaks on rung 1, and so ranks as failed, below the rung-0 winner.
    combos = [e for e in events if e["stage"] == "combine"]
    assert [(c["rung"], c["status"], c["failure"] is None) for c in combos] == [
        (0, "ok", True),
        (1, "diverged", False),
    ]
    assert combos[1]["failure"].startswith("diverged: iteration 7") and len(combos[1]["aps"]) == 2
    assert (found["cls"], found["reg"]) != (combos[0]["cls"], combos[0]["reg"])
    (kept,) = json.loads((path / "checkpoint.json").read_text())["combos"]
    assert (kept["status"], kept["rung"], sorted(kept["rung_failures"])) == ("diverged", 0, ["1"])


@pytest.mark.parametrize("case", range(8))
def test_the_budget_is_never_exceeded_final_included(tmp_path, case):
    import random

    from autoloss.evolution.api import preflight, run_search
    from autoloss.evolution.driver import reserved_costs
    from search_helpers import ECHO

    rng = random.Random(case)
    rungs = rng.choice(["1x1", "1x1,2x2", "1x2,3x1", "1x1,2x1,4x1"])
    cfg = budget_config("smoke").replace(
        evolution={
            "generations": rng.choice([1, 2]),
            "branch": rng.choice(["cls", "reg", "both"]),
            "rungs": rungs,
            "final_seeds": rng.choice([1, 2, 3]),
        },
        task={"name": f"{ECHO}:make_task", "iterations": 5},
        backend={"backend": "serial", "workers": rng.choice([1, 2])},
    )
    baseline, final = reserved_costs(cfg)
    budget = baseline + final + rng.randrange(0, 12)
    summary, _ = run_search(cfg.replace(evolution={"max_proxy_evals": budget}), tmp_path / "run")
    assert summary["proxy_trainings"] <= budget
    with pytest.raises(ConfigError, match=f"give at least {baseline + final}"):
        preflight(cfg.replace(evolution={"max_proxy_evals": baseline + final - 1}))


def test_branches_take_turns_so_a_small_budget_reaches_both(tmp_path):
    from autoloss.evolution.api import run_search
    from autoloss.evolution.driver import reserved_costs
    from search_helpers import ECHO

    cfg = budget_config("smoke").replace(
        evolution={"generations": 2, "branch": "both", "rungs": "1x1", "top_k": 1, "final_seeds": 1},
        task={"name": f"{ECHO}:make_task", "iterations": 5},
        backend={"backend": "serial"},
    )
    baseline, final = reserved_costs(cfg)
    # Room for one generation's training per branch: branch after branch, the first would take both.
    summary, path = run_search(
        cfg.replace(evolution={"max_proxy_evals": baseline + final + 2}), tmp_path / "run"
    )
    events = [json.loads(line) for line in (path.path / "events.jsonl").read_text().splitlines()]
    trained = [(e["branch"], e["generation"]) for e in events if e["stage"] == "proxy"]
    assert {b for b, _ in trained} == {"cls-sigmoid", "reg"}
    # generation by generation: no branch's generation 1 trains before every branch had its generation 0
    first_reg = trained.index(next(t for t in trained if t[0] == "reg"))
    assert all(g == 0 for _, g in trained[:first_reg])
    assert summary["proxy_trainings"] <= baseline + final + 2 and "budget" in (summary.get("stopped") or "")
