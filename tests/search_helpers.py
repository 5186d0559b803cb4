"""Shared by the kill-and-resume tests: run `autoloss search` in its own process group and SIGKILL it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The stand-in proxy task (tests/tasks/echo_task.py), by the file path a search's --task takes; its module
# importable as `echo_task` for the tests that use its helpers.
ECHO = str(Path(__file__).resolve().parent / "tasks" / "echo_task.py")
if str(Path(ECHO).parent) not in sys.path:
    sys.path.insert(0, str(Path(ECHO).parent))


def kill_search_after(args: list[str], out: Path, finished: int, timeout_s: float = 300) -> int:
    """Start `autoloss search <args> --out OUT --quiet`; once `finished` proxy trainings are recorded (or
    the search ended, or `timeout_s` passed), SIGKILL it with all its workers, as a crash would.
    Returns how many trainings had finished."""
    cmd = [sys.executable, "-m", "autoloss", "search", *args, "--out", str(out), "--quiet"]
    # Its own session, so one SIGKILL takes the search and its workers at once.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    evaluations = out / "evaluations.jsonl"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if evaluations.is_file() and len(evaluations.read_text().splitlines()) >= finished:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(evaluations.read_text().splitlines()) if evaluations.is_file() else 0


def serial_runner(cfg, run, task):
    """A ProxyRunner for `cfg` journaling into `run`, training with the stand-in `task` in this process."""
    from autoloss.evolution.proxy import ProxyRunner
    from autoloss.executors import make_executor

    executor = make_executor("serial")
    return ProxyRunner(cfg, run, executor.submit, executor.slots, task=task)


def alive(pid: int) -> bool:
    """Whether process `pid` still runs: a killed child stays a zombie until reaped; /proc says which."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except OSError:
        return False
