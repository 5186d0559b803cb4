"""Nothing lost, nothing crashes: a search SIGKILLed at named points of its lifecycle (runs/failpoints.py),
then resumed, ends with the hall of fame, summary, events and trainings of a search never interrupted —
and no finished training is run twice.

The proxy is the stand-in task of tests/tasks/echo_task.py, so a whole search takes seconds. The kills go
through the CLI in a subprocess of its own session (`AUTOLOSS_FAILPOINT`); the resumes run here. With the
serial backend every point is in the search process and the journal's order is fixed, so "the N-th
training" is the same training in every run; with the process backend a point in a worker kills only the
worker, and the search must retry that training by itself.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoloss.evolution.api import resume_search
from autoloss.report import write_report
from autoloss.runs.failpoints import ENV, ONCE_ENV, POINTS
from autoloss.runs.rundir import RunDirWarning
from search_helpers import ECHO

# A tiny search with every unit: baseline, one generation per branch with a promotion, combine, final.
SEARCH = [
    *("--task", f"{ECHO}:make_task", "--budget", "smoke", "--branch", "both", "--generations", "1"),
    *("--offspring", "60", "--top-k", "2", "--parents", "2", "--rungs", "1x1,2x2", "--final-seeds", "2"),
    *("--proxy-iterations", "5", "--quiet"),
    # TensorBoard's own kill-and-resume tests are in test_tensorboard.py; its figures cost each of the
    # kills here seconds.
    "--no-tensorboard",
]
OUTPUTS = ("hall_of_fame.csv", "best/cls.txt", "best/reg.txt", "best/cls.json", "best/reg.json")
_TIMING = {"seconds", "elapsed", "elapsed_s", "wall", "started", "finished", "finished_at", "time"}


def _cli(args: list[str], failpoint: str | None = None, once: Path | None = None) -> int:
    """`python -m autoloss ARGS` with the failpoint armed; its return code (-9: it SIGKILLed itself). Its
    stderr (warnings about the stale lock a kill leaves, tracebacks) is shown only when it did neither."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV, ONCE_ENV)}
    if failpoint:
        env[ENV] = failpoint
    if once:
        env[ONCE_ENV] = str(once)
    cmd = [sys.executable, "-m", "autoloss", *args]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, err = proc.communicate(timeout=180)
        if proc.returncode not in (0, -signal.SIGKILL):
            sys.stderr.write(err)
        return proc.returncode
    finally:
        try:  # workers of a search that died: gone already (they see their pipe close), or gone now
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _strip(record: dict) -> str:
    """A record without its timings (they differ run to run by nature), as comparable text."""
    kept = {k: v for k, v in record.items() if k not in _TIMING and not k.endswith("_seconds")}
    return json.dumps(kept, sort_keys=True)


def _summary(run: Path) -> dict:
    return {k: v for k, v in json.loads((run / "summary.json").read_text()).items() if k not in _TIMING}


@pytest.mark.parametrize(
    ("armed", "once_exists", "code"),
    [
        (None, False, 0),  # unarmed: a no-op
        ("b", False, 0),  # another point
        ("a", False, -signal.SIGKILL),  # the first time "a" is reached
        ("a:3", False, -signal.SIGKILL),  # the 3rd time: the last one here
        ("a:4", False, 0),  # reached 3 times only
        ("write:x.json", False, -signal.SIGKILL),  # a colon in the name, no count
        ("a", True, 0),  # once, and it already fired (in another process)
    ],
)
def test_a_failpoint_sigkills_its_process_at_the_nth_time_and_only_once(tmp_path, armed, once_exists, code):
    script = "from autoloss.runs.failpoints import failpoint\nfor _ in range(3): failpoint('a')\n"
    script += "failpoint('write:x.json')\n" if armed == "write:x.json" else ""
    env = {k: v for k, v in os.environ.items() if k not in (ENV, ONCE_ENV)}
    once = tmp_path / "fired"
    if once_exists:
        once.touch()
    env.update({ENV: armed, ONCE_ENV: str(once)} if armed else {})
    assert subprocess.run([sys.executable, "-c", script], env=env).returncode == code
    assert once.exists() == (once_exists or code != 0)  # the one that fires marks it


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "run"
    assert _cli(["search", *SEARCH, "--backend", "serial", "--out", str(out)]) == 0
    write_report(out)
    return out


@dataclass(frozen=True)
class Kill:
    where: str  # the moment in the lifecycle, for the table
    point: str  # a failpoint name; "{rung1}" / "{final}": the 1-based index of such a training
    backend: str = "serial"
    dies: bool = True  # False: the point is in a worker, and the search finishes on its own


KILLS = [
    Kill("baseline: inside the 3rd proxy training", "proxy-training:3"),
    Kill("generation 1: between its screening phases", "screening"),
    Kill("generation 2: screening events written, nothing trained", "screened:2"),
    Kill("promotion: a result arrived, its journal line not written", "proxy-result:{rung1}"),
    Kill("promotion: trained and its events written", "promoted"),
    Kill("a generation done, its checkpoint not written", "unit-done:2"),
    Kill("checkpoint.json: tmp written, not renamed", "write:checkpoint.json:3"),
    Kill("combination: trained, its events not written", "combine"),
    Kill("final re-training: the 2nd of its results not journaled", "proxy-result:{final}"),
    Kill("final: re-trained, the summary not made", "final"),
    Kill("outputs: all checkpointed, nothing written", "outputs"),
    Kill("hall_of_fame.csv: tmp written, not renamed", "write:hall_of_fame.csv"),
    Kill("summary.json: tmp written, not renamed", "write:summary.json"),
    Kill("process backend: the search, with 2 workers busy", "proxy-result:5", "process"),
    Kill("process backend: a worker inside a training", "proxy-training:2", "process", dies=False),
]
ROWS: list[dict] = []


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    if ROWS:
        print("\n" + fault_table(ROWS))


def fault_table(rows: list[dict]) -> str:
    lines = [
        "| kill point | failpoint | identical results | finished trainings recomputed | records lost |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        same = "yes" if r["identical"] else "**no**"
        lines.append(f"| {r['where']} | `{r['point']}` | {same} | {r['recomputed']} | {r['lost']} |")
    return "\n".join(lines)


def _point(kill: Kill, reference: Path) -> str:
    trainings = _jsonl(reference / "evaluations.jsonl")
    summary = json.loads((reference / "summary.json").read_text())
    first_rung1 = next(i for i, r in enumerate(trainings) if r["multiplier"] == 2)
    first_final = next(i for i, r in enumerate(trainings) if r["seed"] in summary["seeds"])
    return kill.point.format(rung1=first_rung1 + 1, final=first_final + 2)


def _resume(out: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunDirWarning)  # the killed search's stale lock, taken over
        resume_search(out)


def _compare(out: Path, reference: Path, journaled_before: list[str], kill: Kill, point: str) -> dict:
    """The table's row, from what the interrupted-then-resumed run left next to the reference."""
    lines = (out / "evaluations.jsonl").read_text().splitlines()
    ids = Counter(json.loads(line)["id"] for line in lines)
    ref_ids = Counter(r["id"] for r in _jsonl(reference / "evaluations.jsonl"))
    lost = 0
    for name in ("events.jsonl", "generations.jsonl"):
        got = Counter(map(_strip, _jsonl(out / name)))
        lost += sum((Counter(map(_strip, _jsonl(reference / name))) - got).values())
    lost += sum((ref_ids - ids).values())
    # A training journaled before the kill stays, byte for byte, where it was.
    lost += sum(1 for a, b in zip(journaled_before, lines, strict=False) if a != b)
    lost += max(0, len(journaled_before) - len(lines))
    identical = (
        all((out / f).read_text() == (reference / f).read_text() for f in OUTPUTS)
        and _summary(out) == _summary(reference)
        and [_strip(e) for e in _jsonl(out / "events.jsonl")]
        == [_strip(e) for e in _jsonl(reference / "events.jsonl")]
        and not list(out.rglob(".*.tmp"))
    )
    return {
        "where": kill.where,
        "point": point,
        "identical": identical,
        "recomputed": sum(n - 1 for n in ids.values()),
        "lost": lost,
    }


@pytest.mark.parametrize(
    "kill", KILLS, ids=[f"{k.point.translate({123: None, 125: None})}-{k.backend}" for k in KILLS]
)
def test_a_search_killed_at_a_failpoint_resumes_to_the_uninterrupted_result(kill, reference, tmp_path):
    point = _point(kill, reference)
    assert point.split(":")[0] in POINTS or point.startswith("write:")
    out = tmp_path / "run"
    args = ["search", *SEARCH, "--backend", kill.backend, "--out", str(out)]
    if kill.backend == "process":
        args += ["--workers", "2"]
    code = _cli(args, point, once=tmp_path / "fired")
    assert (tmp_path / "fired").exists(), f"{point} was never reached"
    if kill.dies:
        assert code == -signal.SIGKILL, f"the search should have died at {point}"
        journaled = (out / "evaluations.jsonl").read_text().splitlines()
        _resume(out)
    else:
        assert code == 0, f"a worker's death at {point} should not stop the search"
        journaled = []
    row = _compare(out, reference, journaled, kill, point)
    ROWS.append(row)
    assert row == {**row, "identical": True, "recomputed": 0, "lost": 0}


@pytest.mark.slow
def test_a_resume_killed_while_it_drops_the_unfinished_units_events_resumes_again(reference, tmp_path):
    out = tmp_path / "run"
    code = _cli(["search", *SEARCH, "--backend", "serial", "--out", str(out)], "unit-done:2")
    assert code == -signal.SIGKILL
    journaled = (out / "evaluations.jsonl").read_text().splitlines()
    # The resume's first write: events.jsonl without the lines of the unit that was not checkpointed.
    assert _cli(["resume", str(out), "--quiet"], "write:events.jsonl") == -signal.SIGKILL
    _resume(out)
    kill = Kill("resume: while it drops an unfinished unit's events", "unit-done:2, then write:events.jsonl")
    row = _compare(out, reference, journaled, kill, kill.point)
    ROWS.append(row)
    assert row == {**row, "identical": True, "recomputed": 0, "lost": 0}


@pytest.mark.slow
@pytest.mark.parametrize("point", ["report", "write:report.md"])
def test_a_report_killed_midway_leaves_no_half_file_and_the_next_one_is_whole(point, reference, tmp_path):
    out = tmp_path / "copy" / reference.name  # the same name: the report's title is the run's name
    shutil.copytree(reference, out, ignore=shutil.ignore_patterns("report.md", "*.png", ".lock"))
    assert _cli(["report", str(out)], point) == -signal.SIGKILL
    assert not (out / "report.md").exists()  # nothing, rather than half a report
    write_report(out)
    identical = (out / "report.md").read_text() == (reference / "report.md").read_text()
    ROWS.append(
        {"where": "report.md being made", "point": point, "identical": identical, "recomputed": 0, "lost": 0}
    )
    assert identical and not list(out.glob(".*.tmp"))
    with open(out / "hall_of_fame.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == list(csv.reader((reference / "hall_of_fame.csv").open()))
