"""The same seed gives the same search however the work is spread: 1 or 2 workers, serial or process.

The proxy is the stand-in task of tests/tasks/echo_task.py (its mAP is a pure function of the losses, the
seed and the length), so what is compared is the search's own decisions: which candidates were screened,
rejected, trained, promoted, combined and reported — under a proxy-training budget too, whose accounting
must not depend on how many trainings run at once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

import autoloss
from search_helpers import ECHO

SEARCH = {
    "evolution": {
        "branch": "both",
        "generations": 2,
        "offspring": 150,
        "top_k": 2,
        "parents": 2,
        "rungs": "1x1,2x2",
        "final_seeds": 3,
    },
}
_TIMING = {"seconds", "elapsed", "wall", "started", "finished", "time"}


def _search(out: Path, backend: dict, **extra) -> dict:
    return autoloss.search(
        out,
        budget="smoke",
        task={"name": f"{ECHO}:make_task", "iterations": 5},
        backend=backend,
        **{**SEARCH, **extra},
    )


def _decisions(run: Path) -> tuple:
    """Everything the search decided, without timings (which differ run to run by nature)."""

    def strip(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in _TIMING and not k.endswith("_seconds")}

    events = [strip(json.loads(line)) for line in (run / "events.jsonl").read_text().splitlines()]
    trained = sorted(
        (r["cls"], r["reg"], r["seed"], r["multiplier"], r["result"]["metrics"].get("AP"))
        for r in map(json.loads, (run / "evaluations.jsonl").read_text().splitlines())
    )
    with open(run / "hall_of_fame.csv", newline="", encoding="utf-8") as fh:
        hall = list(csv.reader(fh))
    return events, trained, hall


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, {"evolution": {**SEARCH["evolution"], "max_proxy_evals": 54}}])
def test_the_same_seed_gives_the_same_search_for_any_workers_and_backend(tmp_path, extra):
    spreads = {
        "serial, 1 worker": {"backend": "serial", "workers": 1},
        "serial, 2 workers": {"backend": "serial", "workers": 2},
        "process, 2 workers": {"backend": "process", "workers": 2},
    }
    outcomes = {}
    for name, backend in spreads.items():
        out = tmp_path / name.replace(", ", "-").replace(" ", "")
        summary = _search(out, backend, **extra)
        outcomes[name] = (_decisions(out), summary["table"])
    first = outcomes["serial, 1 worker"]
    events, trained, hall = first[0]
    assert any(e.get("stage") == "proxy" for e in events) and len(trained) > 10 and len(hall) > 2
    for name, outcome in outcomes.items():
        assert outcome[0][0] == events, f"events differ with {name}"
        assert outcome[0][1] == trained, f"trainings differ with {name}"
        assert outcome[0][2] == hall, f"hall of fame differs with {name}"
        assert outcome[1] == first[1], f"final table differs with {name}"
