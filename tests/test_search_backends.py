"""The same search on every backend: one seed, one hall of fame — also when a worker is killed mid-search
and when the whole search is killed and resumed on the process backend."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from autoloss.evolution.api import resume_search, run_search
from autoloss.evolution.config import budget_config
from search_helpers import kill_search_after

pytestmark = pytest.mark.slow

HAS_RAY = importlib.util.find_spec("ray") is not None
ITERATIONS = 10


def tiny(backend: str, workers: int = 2):
    # One generation of the cls branch and one final seed, ten iterations a training: a dozen proxy
    # trainings of about a second each.
    return budget_config("smoke").replace(
        evolution={"generations": 1, "branch": "cls", "final_seeds": 1},
        backend={"backend": backend, "workers": workers},
        task={"iterations": ITERATIONS},
    )


def _evaluations(path: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (path / "evaluations.jsonl").read_text().splitlines()]
    return {r["id"]: r["result"].get("metrics", {}).get("AP") for r in rows}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "run"
    summary, _ = run_search(tiny("serial"), out)
    return summary, out


@pytest.mark.parametrize(
    "backend",
    ["process", pytest.param("ray", marks=pytest.mark.skipif(not HAS_RAY, reason="no ray extra"))],
)
def test_every_backend_finds_what_serial_finds(serial, tmp_path, backend):
    summary, ref = serial
    got, _ = run_search(tiny(backend), tmp_path / backend)
    assert (tmp_path / backend / "hall_of_fame.csv").read_text() == (ref / "hall_of_fame.csv").read_text()
    assert _evaluations(tmp_path / backend) == _evaluations(ref)
    assert got["table"]["found"]["ap"] == summary["table"]["found"]["ap"]


def _spawned_workers() -> list[int]:
    """PIDs of this process's spawned multiprocessing children (the process backend's workers)."""
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == me and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def test_a_worker_killed_during_the_search_does_not_change_its_result(serial, tmp_path):
    summary, ref = serial
    out = tmp_path / "killed-worker"
    killed: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        # Kill one worker as soon as the proxy trainings have begun, and another after the second result.
        for after in (1, 3):
            while not stop.is_set():
                done = out / "evaluations.jsonl"
                workers = _spawned_workers()
                if done.is_file() and len(done.read_text().splitlines()) >= after and workers:
                    os.kill(workers[0], signal.SIGKILL)
                    killed.append(workers[0])
                    break
                time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        got, _ = run_search(tiny("process"), out)
    finally:
        stop.set()
        thread.join()
    assert len(killed) == 2
    assert (out / "hall_of_fame.csv").read_text() == (ref / "hall_of_fame.csv").read_text()
    assert _evaluations(out) == _evaluations(ref)  # nothing lost, nothing recorded as failed
    assert got["table"]["found"]["ap"] == summary["table"]["found"]["ap"]


def test_a_killed_process_backend_search_resumes_to_the_same_result(serial, tmp_path):
    summary, ref = serial
    out = tmp_path / "killed"
    args = [
        "--budget",
        "smoke",
        "--generations",
        "1",
        "--branch",
        "cls",
        "--final-seeds",
        "1",
        "--backend",
        "process",
        "--workers",
        "2",
        "--proxy-iterations",
        str(ITERATIONS),
    ]
    finished = kill_search_after(args, out, finished=3, timeout_s=240)
    evaluations = out / "evaluations.jsonl"
    assert finished >= 3 and not (out / "summary.json").exists()
    resumed, _ = resume_search(out)
    assert (out / "hall_of_fame.csv").read_text() == (ref / "hall_of_fame.csv").read_text()
    assert resumed["table"]["found"]["ap"] == summary["table"]["found"]["ap"]
    ids = [json.loads(line)["id"] for line in evaluations.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(_evaluations(ref))  # finished trainings were not repeated
