"""GPUs on the executors, checked on a CPU-only machine: which GPU each process worker is shown (and keeps
across a restart), how the visible GPUs become worker slots, and the Ray settings refused before Ray
starts. Nothing here needs CUDA: a worker's GPU is only its CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import time

import pytest
import torch

from autoloss.errors import AutolossError
from autoloss.executors import BackendUnavailable, make_executor
from autoloss.executors.base import gpu_slots, trial, visible_gpus
from autoloss.executors.process import ProcessExecutor
from autoloss.executors.ray_backend import RayExecutor, _call, trial_gpus


# --- stand-in task: module level, so spawned workers can import it -----------------------------------
def report_gpu(seconds: float) -> tuple[int, str | None]:
    time.sleep(seconds)  # long enough that every slot takes one of a batch
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def _gpu_by_pid(ex: ProcessExecutor, tasks: int = 4) -> dict[int, str | None]:
    seen: dict[int, str | None] = {}
    for pid, gpu in (f.result(timeout=120) for f in [ex.submit(report_gpu, 0.5) for _ in range(tasks)]):
        assert seen.setdefault(pid, gpu) == gpu  # one worker, one GPU, whatever task it runs
    return seen


def _wait_gone(ex: ProcessExecutor, pid: int, timeout: float = 30.0) -> None:
    # Until the slot sees the death, the next task could still be sent to the dying worker
    deadline = time.monotonic() + timeout
    while pid in ex.worker_pids():
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker {pid} still alive")
        time.sleep(0.05)


# --- process backend ---------------------------------------------------------------------------------
def test_each_process_worker_sees_its_own_gpu_and_a_restarted_one_keeps_it():
    ex = ProcessExecutor(gpus=["0", "1"])
    try:
        assert ex.slots == 2
        first = _gpu_by_pid(ex)
        assert sorted(first.values()) == ["0", "1"]
        killed = next(pid for pid, gpu in first.items() if gpu == "1")
        kept = next(pid for pid, gpu in first.items() if gpu == "0")
        os.kill(killed, signal.SIGKILL)
        _wait_gone(ex, killed)
        second = _gpu_by_pid(ex)
        assert killed not in second and second[kept] == "0"
        [restarted] = [pid for pid in second if pid != kept]
        assert second[restarted] == "1"  # the slot's fresh worker is on the same GPU
    finally:
        ex.shutdown()


def test_process_executor_gpu_arguments_must_agree():
    with pytest.raises(ValueError, match="3 workers but 2 GPU slots"):
        ProcessExecutor(3, gpus=["0", "1"])
    with pytest.raises(ValueError, match="at least one GPU"):
        ProcessExecutor(gpus=[])


# --- visible GPUs and slots --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("", []),
        ("0", ["0"]),
        (" 2, 3 ", ["2", "3"]),
        ("1,-1,0", ["1"]),
        ("GPU-5ad1,GPU-77", ["GPU-5ad1", "GPU-77"]),
    ],
)
def test_visible_gpus_reads_cuda_visible_devices(monkeypatch, env, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    assert visible_gpus() == expected


def test_visible_gpus_without_the_variable_asks_torch(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == [str(i) for i in range(torch.cuda.device_count())]  # [] without CUDA
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert visible_gpus() == ["0", "1"]


def test_gpu_slots_one_per_gpu_unless_told():
    assert gpu_slots(["0", "1"]) == ["0", "1"]
    assert gpu_slots(["0", "1"], workers_per_gpu=2) == ["0", "1", "0", "1"]
    assert gpu_slots(["0", "1"], workers=3) == ["0", "1", "0"]
    assert gpu_slots(["4"], workers_per_gpu=3, workers=3) == ["4", "4", "4"]


@pytest.mark.parametrize(
    ("visible", "per_gpu", "workers", "message"),
    [
        ([], None, None, "no GPU is visible"),
        (["0"], 0, None, "workers_per_gpu must be at least 1"),
        (["0"], None, 0, "workers must be positive"),
        (["0", "1"], 2, 3, "do not fit 2 per GPU"),
    ],
)
def test_gpu_slots_refuses_bad_values(visible, per_gpu, workers, message):
    with pytest.raises(ValueError, match=message):
        gpu_slots(visible, per_gpu, workers)


def test_make_executor_on_cuda_lays_the_pool_out_over_the_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    ex = make_executor("process", 7, device="cuda", workers_per_gpu=2)  # workers gives way to the GPUs
    try:
        assert ex.slots == 4 and ex.gpus == ["3", "5", "3", "5"]
    finally:
        ex.shutdown()
    cpu = make_executor("process", 3, workers_per_gpu=2)  # on cpu the GPU settings do nothing
    try:
        assert cpu.slots == 3 and cpu.gpus is None
    finally:
        cpu.shutdown()


def test_make_executor_on_cuda_without_a_gpu_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(BackendUnavailable, match="--device cuda but no GPU is visible") as err:
        make_executor("process", device="cuda")
    assert isinstance(err.value, AutolossError) and "\n" not in str(err.value)
    with pytest.raises(BackendUnavailable, match="each worker one GPU"):
        make_executor("process", device="cuda:1")


# --- ray backend, without starting Ray ---------------------------------------------------------------
def test_trial_gpus_default_to_one_on_cuda_and_none_on_cpu():
    assert trial_gpus("cpu", None) == 0.0 and trial_gpus("cuda", None) == 1.0
    assert trial_gpus("cuda", 0.5) == 0.5 and trial_gpus("cpu", 0) == 0.0
    with pytest.raises(ValueError, match=">= 0"):
        trial_gpus("cpu", -1)


def test_a_zero_gpu_trial_on_cuda_is_refused_before_ray_starts(monkeypatch):
    # Were Ray imported first, this would be the missing-Ray message instead
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BackendUnavailable, match=r"would see none; pass --gpus-per-trial > 0"):
        RayExecutor(1, device="cuda", gpus_per_trial=0)
    with pytest.raises(BackendUnavailable, match="CUDA_VISIBLE_DEVICES"):
        make_executor("ray", device="cuda", gpus_per_trial=0.0)


def test_a_ray_task_gets_omp_threads_for_its_cpus(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # restored afterwards, as are torch's threads below
    threads = torch.get_num_threads()
    try:
        assert _call(3, os.environ.get, "OMP_NUM_THREADS") == "3"
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)


# --- Ray: GPU trials with logical GPUs ----------------------------------------------------------------
@trial
def report_gpu_trial(seconds: float) -> tuple[int, str | None]:
    return report_gpu(seconds)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="the ray extra is not installed")
def test_ray_gpu_trials_see_their_own_gpu_each_in_a_fresh_process(monkeypatch):
    import logging
    from pathlib import Path

    from autoloss.executors.ray_backend import _import_ray

    # Ray's workers import this module to run its trial function: they inherit the driver's environment.
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    # Ray schedules logical GPUs without hardware: two of them on this CPU-only machine.
    ray = _import_ray(local=True)
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False}
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, num_gpus=2, **quiet)
    try:
        ex = RayExecutor(2, device="cuda")  # one GPU per trial
        got = [f.result(timeout=120) for f in [ex.submit(report_gpu_trial, 0.3) for _ in range(4)]]
        ex.shutdown()
    finally:
        ray.shutdown()
    assert all(gpu in ("0", "1") for _, gpu in got)  # each trial sees the one GPU Ray gave it
    # A worker that initialised CUDA for one GPU would keep that context if handed another GPU id: every
    # GPU trial runs in a process of its own (max_calls=1).
    assert len({pid for pid, _ in got}) == len(got)
