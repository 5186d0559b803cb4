"""SIGTERM (what Slurm, Kubernetes and systemd send before SIGKILL) stops a long command the way Ctrl-C
does: promptly, with its workers gone and the trainings it finished kept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_helpers import alive

pytestmark = pytest.mark.slow


def _lines(root: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in root.rglob("evaluations.jsonl"))


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _terminate_after_first_results(args: list[str], out: Path, results: int = 2) -> tuple[float, int, int]:
    """Run `autoloss ARGS`; once `results` trainings are journaled, SIGTERM the command (its main process
    only, as a scheduler's first signal may be). Returns (seconds it took to exit, journaled lines at the
    signal, journaled lines after it exited); asserts that its worker processes ended too."""
    cmd = [sys.executable, "-m", "autoloss", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while _lines(out) < results and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, "the command ended before it could be signalled"
        workers = _children(proc.pid)
        before = _lines(out)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        took = time.monotonic() - start
        deadline = time.monotonic() + 10
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert workers and not any(alive(w) for w in workers), "a worker outlived the command"
        return took, before, _lines(out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_stops_a_search_promptly_and_keeps_its_trainings(tmp_path):
    out = tmp_path / "run"
    args = ["search", "--budget", "smoke", "--generations", "1", "--proxy-iterations", "60"]
    args += ["--backend", "process", "--workers", "2", "--out", str(out), "--quiet"]
    took, before, after = _terminate_after_first_results(args, out)
    assert took < 10, f"SIGTERM took {took:.1f} s to stop the search"
    assert after >= before >= 2  # nothing finished was lost
    assert not (out / "summary.json").exists()
    # It stopped as on Ctrl-C, not as killed: the run lock was released, so a resume need not take it over.
    assert not (out / ".lock").exists()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_sigterm_stops_a_fidelity_run_promptly_and_keeps_its_trainings(tmp_path):
    out = tmp_path / "fid"
    args = ["fidelity", "--proxy", "fcos:shapes:64:60", "--target", "fcos:shapes:64:120", "--no-panel"]
    for pair in ("default;default", "bce;default", "default;iou", "default;giou"):
        args += ["--loss", pair]
    args += ["--seeds", "2", "--backend", "process", "--workers", "2", "--preset", "tiny", "--out", str(out)]
    took, before, after = _terminate_after_first_results(args, out)
    assert took < 10, f"SIGTERM took {took:.1f} s to stop the fidelity run"
    assert after >= before >= 2
