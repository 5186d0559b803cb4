"""The survivor pool: survivors not picked wait for later generations, the best by the pick rule kept, the
rest expired; in a search (stand-in task) pooled survivors are trained later, every one is accounted for,
and a search killed and resumed draws from the same pool."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.evolution.config import ConfigError, SearchConfig, validate
from autoloss.evolution.funnel import pick_top_k
from autoloss.evolution.pool import SurvivorPool
from search_helpers import ECHO


def _s(text: str, score: float | None) -> dict:
    return {"text": text, "key": f"k-{text}", "mos_score": score}


def test_picks_from_the_pool_and_keeps_the_best_by_mos_score():
    pool = SurvivorPool(capacity=2, by_mos=True)
    rng = random.Random(0)
    picked, pooled, expired = pool.pick([_s("a", 0.9), _s("b", 0.5), _s("c", 0.7), _s("d", 0.1)], 1, 0, rng)
    assert [s["text"] for s in picked] == ["a"]
    assert [s["text"] for s in pooled] == ["c", "b"] and [s["text"] for s in expired] == ["d"]
    # Generation 1: c (0.7, from the pool) outranks the new e (0.6); the pool keeps e and b (0.5) ...
    picked, pooled, expired = pool.pick([_s("e", 0.6), _s("f", 0.2)], 1, 1, rng)
    assert [(s["text"], s["generation"]) for s in picked] == [("c", 0)]
    assert [s["text"] for s in pooled] == ["e"] and [s["text"] for s in expired] == ["f"]
    assert [(s["text"], s["generation"]) for s in pool.entries] == [("e", 1), ("b", 0)]
    # ... and where scores tie the newer survivor stays, the older one expires.
    _, pooled, expired = pool.pick([_s("g", 0.5)], 0, 2, rng)
    assert [s["text"] for s in pooled] == ["g"] and [(s["text"], s["generation"]) for s in expired] == [
        ("b", 0)
    ]


def test_what_the_budget_cannot_afford_waits_in_the_pool():
    pool = SurvivorPool(capacity=5, by_mos=True)
    picked, pooled, expired = pool.pick(
        [_s("a", 0.9), _s("b", 0.8), _s("c", 0.7)], 2, 0, random.Random(0), afford=1
    )
    assert [s["text"] for s in picked] == ["a"] and [s["text"] for s in pooled] == ["b", "c"] and not expired


@pytest.mark.parametrize("by_mos", [True, False])
def test_a_pool_of_zero_picks_as_the_search_always_did(by_mos):
    survivors = [_s(t, score) for t, score in zip("abcdef", (0.3, 0.9, None, 0.5, 0.9, 0.1), strict=True)]
    pool = SurvivorPool(capacity=0, by_mos=by_mos)
    picked, pooled, expired = pool.pick(survivors, 3, 4, random.Random(7), afford=2)
    before = pick_top_k(survivors, 3, random.Random(7), by_mos=by_mos)[:2]
    assert [s["text"] for s in picked] == [s["text"] for s in before]
    assert not pooled and len(expired) == 4 and len(pool) == 0


def test_without_mos_the_pool_keeps_the_newest_and_its_state_round_trips():
    pool = SurvivorPool(capacity=2, by_mos=False)
    rng = random.Random(1)
    pool.pick([_s("a", None), _s("b", None), _s("c", None)], 0, 0, rng)
    pool.pick([_s("d", None)], 0, 1, rng)
    assert [(s["text"], s["generation"]) for s in pool.entries] == [("d", 1), ("a", 0)]
    again = SurvivorPool(capacity=2, by_mos=False)
    again.load_state_dict(json.loads(json.dumps(pool.state_dict())))
    assert again.entries == pool.entries


def test_a_negative_pool_is_refused():
    with pytest.raises(ConfigError, match="--survivor-pool"):
        validate(SearchConfig().replace(evolution={"survivor_pool": -1}))


# A search on the stand-in task: 3 generations of 100 offspring, 1 trained per generation, a pool of 3.
ARGS = ["--task", f"{ECHO}:make_task", "--budget", "smoke", "--offspring", "100", "--generations", "3"]
ARGS += ["--top-k", "1", "--survivor-pool", "3", "--backend", "serial"]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def pooled_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "run"
    r = CliRunner().invoke(cli, ["search", *ARGS, "--quiet", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_pooled_survivors_are_trained_later_and_every_one_is_accounted_for(pooled_run):
    events = _jsonl(pooled_run / "events.jsonl")
    generations = _jsonl(pooled_run / "generations.jsonl")
    from_pool = [e for e in events if e["stage"] == "proxy" and "pooled_at" in e]
    assert from_pool, "no generation trained a survivor an earlier one had pooled"
    for branch in ("cls-sigmoid", "reg"):
        mine = [e for e in events if e.get("branch") == branch]
        pooled = [e for e in mine if e["stage"] == "pooled"]
        later = {e["text"]: e for e in mine if "pooled_at" in e}  # trained from the pool, or expired
        gens = [g for g in generations if g["branch"] == branch]
        for e in pooled:
            if e["text"] in later:
                assert later[e["text"]]["pooled_at"] == e["generation"] < later[e["text"]]["generation"]
        waiting = [e for e in pooled if e["text"] not in later]
        assert len(waiting) == gens[-1]["pool"]["size"] <= 3  # the rest still waits at the end
        for g in gens:
            unit = [e for e in mine if e["unit"] == g["unit"]]
            own = Counter(e["stage"] for e in unit if "pooled_at" not in e)
            assert own["pooled"] == g["pool"]["pooled"]
            assert sum("pooled_at" in e and e["stage"] == "proxy" for e in unit) == g["pool"]["from_pool"]
            assert sum(e["stage"] == "expired" for e in unit) == g["pool"]["expired"]
            # every survivor of the generation: trained now, pooled, or dropped at once
            assert own["proxy"] + own["pooled"] + own["screened"] == g["counts"]["mos"]
            assert g["counts"]["proxy"] <= 1  # the top-K of 1, from the generation or the pool


@pytest.mark.slow
def test_a_search_killed_after_pooling_resumes_with_the_same_pool(pooled_run, tmp_path):
    out = tmp_path / "killed"
    # Killed in the 4th generation unit (reg:1), its screening journaled: cls-sigmoid:1 before it pooled
    # survivors, and reg:1's own picks from its pool are replayed on resume.
    env = {**os.environ, "AUTOLOSS_FAILPOINT": "screened:4"}
    cmd = [sys.executable, "-m", "autoloss", "search", *ARGS, "--quiet", "--out", str(out)]
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=300).returncode == -signal.SIGKILL
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["pools"]["cls-sigmoid"] and "reg:1" not in state["completed"]
    r = CliRunner().invoke(cli, ["resume", str(out), "--quiet"])
    assert r.exit_code == 0, r.output

    def trained(run: Path) -> list[tuple]:
        return [
            (e["unit"], e["text"], e.get("pooled_at"))
            for e in _jsonl(run / "events.jsonl")
            if e["stage"] in ("proxy", "pooled", "expired")
        ]

    assert trained(out) == trained(pooled_run)
    assert (out / "hall_of_fame.csv").read_text() == (pooled_run / "hall_of_fame.csv").read_text()


@pytest.mark.slow
def test_the_report_counts_pooled_trained_and_expired(pooled_run):
    from autoloss.report.markdown import write_report

    text = write_report(pooled_run).read_text()
    for branch in ("cls-sigmoid", "reg"):
        pools = [g["pool"] for g in _jsonl(pooled_run / "generations.jsonl") if g["branch"] == branch]
        line = (
            f"Survivor pool, {branch}: {sum(p['pooled'] for p in pools)} survivors waited in it, "
            f"{sum(p['from_pool'] for p in pools)} were trained from it in a later generation, "
            f"{sum(p['expired'] for p in pools)} were dropped for better ones, "
            f"{pools[-1]['size']} wait at the end."
        )
        assert line in text
