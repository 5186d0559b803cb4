"""The three backends behind one protocol: results and task exceptions through the future, a killed
worker as `WorkerLost`, stopped tasks, the proxy runner's retry/timeout rules, and a missing Ray."""

from __future__ import annotations

import importlib.util
import json
import operator
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoloss.errors import AutolossError
from autoloss.evolution.config import budget_config
from autoloss.evolution.proxy import EVALUATIONS, ProxyRunner
from autoloss.executors import (
    BackendUnavailable,
    OutOfMemory,
    TrialTimeout,
    WorkerLost,
    make_executor,
    stop_task,
)
from autoloss.executors.process import ProcessExecutor
from autoloss.runs.rundir import RunDir
from search_helpers import alive

HAS_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="the ray extra is not installed")


# --- stand-in tasks: module level, so spawned workers can import them ---------------------------------
def report_pid_then_sleep(path: str, seconds: float) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)


def hang(experiment, cls_loss, reg_loss):
    time.sleep(600)


def fine(experiment, cls_loss, reg_loss):
    time.sleep(0.2)  # long enough that the runner's next submission finds this one still running
    return {
        "status": "ok",
        "metrics": {"AP": 0.5},
        "pid": os.getpid(),
        "seed": experiment["schedule"]["seed"],
    }


def flaky(experiment, cls_loss, reg_loss):
    """Fails on its first call per marker directory (the way named by cls_loss), then trains fine."""
    marker = Path(experiment["settings"]["marker"]) / f"{cls_loss}-{reg_loss}"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        if reg_loss == "die":
            os._exit(1)
        if reg_loss == "sigkill":  # what the OOM killer does to a worker
            os.kill(os.getpid(), signal.SIGKILL)
        if reg_loss == "oom":
            raise OutOfMemory("CUDA out of memory. Tried to allocate 2.00 GiB")
        raise RuntimeError("first call fails")
    return fine(experiment, cls_loss, reg_loss)


def always_raises(experiment, cls_loss, reg_loss):
    raise ValueError("this trial always breaks")


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def process_executor():
    ex = ProcessExecutor(2)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def ray_executor():
    if not HAS_RAY:
        pytest.skip("the ray extra is not installed")
    from autoloss.executors.ray_backend import RayExecutor

    ex = RayExecutor(2)  # a private cluster on loopback (no address)
    yield ex
    ex.shutdown()
    import ray

    assert not ray.is_initialized()  # the cluster it started is gone


@pytest.fixture(params=["serial", "process", "ray"])
def executor(request):
    if request.param == "serial":
        return make_executor("serial")
    return request.getfixturevalue(f"{request.param}_executor")


def _wait_for_pid(path: Path, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"no task wrote {path}")


# --- every backend -----------------------------------------------------------------------------------
def test_a_simple_function_returns_its_result_through_the_future(executor):
    futures = [executor.submit(pow, 2, n) for n in range(6)]
    assert [f.result(timeout=60) for f in futures] == [1, 2, 4, 8, 16, 32]
    assert executor.slots >= 1


def test_an_exception_in_the_task_surfaces_through_the_future(executor):
    f = executor.submit(operator.truediv, 1, 0)
    with pytest.raises(ZeroDivisionError):
        f.result(timeout=60)
    assert executor.submit(operator.add, 2, 3).result(timeout=60) == 5  # and it keeps working


# --- process backend ---------------------------------------------------------------------------------
def test_killing_a_worker_mid_task_gives_worker_lost_and_the_pool_keeps_working(process_executor, tmp_path):
    ex = process_executor
    pid_file = tmp_path / "pid"
    f = ex.submit(report_pid_then_sleep, str(pid_file), 60)
    other = ex.submit(time.sleep, 1.0)  # the other worker's task must not be touched
    pid = _wait_for_pid(pid_file)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLost, match="died"):
        f.result(timeout=30)
    assert other.result(timeout=30) is None
    assert [x.result(timeout=60) for x in [ex.submit(pow, 3, n) for n in range(4)]] == [1, 3, 9, 27]
    assert pid not in ex.worker_pids()


def test_a_stopped_task_kills_its_worker_and_fails_with_the_reason(process_executor, tmp_path):
    pid_file = tmp_path / "pid"
    f = process_executor.submit(report_pid_then_sleep, str(pid_file), 60)
    pid = _wait_for_pid(pid_file)
    start = time.monotonic()
    assert stop_task(f, TrialTimeout("too slow"))
    with pytest.raises(TrialTimeout, match="too slow"):
        f.result(timeout=10)
    assert time.monotonic() - start < 5
    assert not alive(pid)  # it no longer holds a core
    assert process_executor.submit(pow, 2, 5).result(timeout=60) == 32


def test_a_worker_that_exits_is_lost_too(process_executor):
    with pytest.raises(WorkerLost, match="exit code 3"):
        process_executor.submit(os._exit, 3).result(timeout=60)


# --- ray backend -------------------------------------------------------------------------------------
@needs_ray
def test_ray_worker_death_and_stop(ray_executor, tmp_path):
    with pytest.raises(WorkerLost, match="Ray worker"):
        ray_executor.submit(os._exit, 3).result(timeout=60)
    # Builtins only: Ray workers cannot import this test module (it is not on their path).
    f = ray_executor.submit(time.sleep, 60)
    time.sleep(1.0)
    start = time.monotonic()
    stop_task(f, TrialTimeout("too slow"))
    with pytest.raises(TrialTimeout, match="too slow"):
        f.result(timeout=30)
    assert time.monotonic() - start < 10
    assert ray_executor.submit(pow, 2, 3).result(timeout=60) == 8


@needs_ray
def test_ray_joins_an_existing_session_without_ending_it(ray_executor):
    import ray

    from autoloss.executors.ray_backend import RayExecutor

    joined = RayExecutor(1)
    assert joined.submit(pow, 2, 2).result(timeout=60) == 4
    joined.shutdown()
    assert ray.is_initialized()  # the session belongs to whoever started it
    with pytest.raises(BackendUnavailable, match="asks for 1 GPU"):
        RayExecutor(1, gpus_per_trial=1)


def test_a_missing_ray_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(BackendUnavailable, match=r"pip install 'autoloss\[ray\]'") as err:
        make_executor("ray", 2)
    assert isinstance(err.value, AutolossError)
    from autoloss.cli import cli

    r = CliRunner().invoke(
        cli, ["search", "--budget", "smoke", "--backend", "ray", "--out", str(tmp_path / "x")]
    )
    assert r.exit_code == 2
    assert "pip install 'autoloss[ray]'" in r.output and "Traceback" not in r.output


# --- the proxy runner's fault rules ------------------------------------------------------------------
def _runner(tmp_path, executor, task, timeout=None):
    cfg = budget_config("smoke").replace(
        backend={"trial_timeout_s": timeout}, task={"settings": {"marker": str(tmp_path)}}
    )
    run = RunDir.create(tmp_path / "run", cfg.to_dict())
    runner = ProxyRunner(cfg, run, executor.submit, executor.slots, task=task)
    return runner, run


def _evaluations(run):
    return [json.loads(line) for line in (Path(run.path) / EVALUATIONS).read_text().splitlines()]


def test_a_trial_past_its_timeout_is_stopped_retried_once_and_recorded(process_executor, tmp_path):
    runner, run = _runner(tmp_path, process_executor, hang, timeout=1.0)
    start = time.monotonic()
    [result] = runner.evaluate([("a", "b", 0)])
    assert time.monotonic() - start < 30  # two 1 s attempts and worker restarts, not 600 s
    assert result["status"] == "failed"
    assert "TrialTimeout" in result["reason"] and "after a retry" in result["reason"]
    assert [e["result"]["status"] for e in _evaluations(run)] == ["failed"]
    assert process_executor.submit(pow, 2, 2).result(timeout=60) == 4


@pytest.mark.parametrize("fault", ["die", "sigkill", "oom", "raise"])
def test_a_fault_is_retried_once_on_a_fresh_worker(process_executor, tmp_path, fault):
    runner, run = _runner(tmp_path, process_executor, flaky)
    [result] = runner.evaluate([("x", fault, 3)])
    assert result["status"] == "ok" and result["seed"] == 3
    first_pid = int((tmp_path / f"x-{fault}").read_text())
    if fault in ("die", "sigkill", "oom"):  # a lost or out-of-memory worker is replaced before the retry
        assert result["pid"] != first_pid
    assert len(_evaluations(run)) == 1


def test_a_trial_that_keeps_failing_is_recorded_and_the_others_finish(process_executor, tmp_path):
    runner, run = _runner(tmp_path, process_executor, always_raises)
    results = runner.evaluate([("a", "b", 0), ("c", "d", 0)])
    assert [r["status"] for r in results] == ["failed", "failed"]
    assert all("this trial always breaks (after a retry)" in r["reason"] for r in results)
    assert len(_evaluations(run)) == 2


def test_the_runner_keeps_every_slot_busy(process_executor, tmp_path):
    futures = []
    in_flight = []

    def counting_submit(fn, *args):
        in_flight.append(sum(not f.done() for f in futures))
        futures.append(process_executor.submit(fn, *args))
        return futures[-1]

    runner, _ = _runner(tmp_path, process_executor, fine)
    runner.submit = counting_submit
    results = runner.evaluate([("a", str(n), n) for n in range(5)])
    assert [r["seed"] for r in results] == [0, 1, 2, 3, 4]  # job order, whatever the finishing order
    assert in_flight[:2] == [0, 1] and max(in_flight) <= 1  # two at once from the start, never more
    assert len({r["pid"] for r in results}) == 2  # both workers took trainings


# --- workers that start processes, and workers whose parent dies ---------------------------------------
def train_with_loader_workers() -> tuple[str, str]:
    from autoloss.detection.task import evaluate_losses

    result = evaluate_losses(preset_name="tiny", train={"iterations": 2, "loader_workers": 1})
    return result.status, result.reason


def test_a_training_with_loader_workers_runs_on_a_process_worker():
    # A daemonic worker may not start children: every DataLoader with num_workers > 0 failed there.
    pool = ProcessExecutor(1)
    try:
        status, reason = pool.submit(train_with_loader_workers).result(timeout=120)
    finally:
        pool.shutdown()
    assert status == "ok", reason


_ORPHAN_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from autoloss.executors.process import ProcessExecutor
from test_executors import report_pid_then_sleep

pool = ProcessExecutor(2)
futures = [pool.submit(report_pid_then_sleep, {out!r} + str(i), 120) for i in range(2)]
time.sleep(120)
"""


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_no_worker_outlives_a_parent_killed_with_sigkill(tmp_path):
    import subprocess

    script = _ORPHAN_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path / "pid"))
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        files = [tmp_path / f"pid{i}" for i in range(2)]
        deadline = time.monotonic() + 60
        while not all(f.is_file() and f.read_text() for f in files) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = [int(f.read_text()) for f in files]
        assert all(alive(p) for p in pids)  # both workers busy in a task
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "a worker outlived its SIGKILLed parent"
