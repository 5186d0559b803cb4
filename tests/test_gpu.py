"""GPU behaviour (marked `gpu`: skipped where CUDA is absent; `bench/gpu_check.sh` runs them on a GPU)."""

from __future__ import annotations

import os

import pytest
import torch

from autoloss.detection import ExperimentConfig, TrainConfig, run_experiment
from autoloss.executors import make_executor

pytestmark = pytest.mark.gpu


def _cuda_experiment(**train) -> ExperimentConfig:
    base = {"iterations": 20, "batch_size": 4, "warmup_iters": 5, "device": "cuda", **train}
    return ExperimentConfig(
        data="shapes", image_size=64, train_size=16, val_size=8, train=TrainConfig(**base)
    )


@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_on_cuda_with_each_amp_mode(amp):
    result, _ = run_experiment(_cuda_experiment(amp=amp), cls_loss="bce", reg_loss="giou")
    assert result.status == "ok", result.reason
    assert result.final_loss is not None and "AP" in result.metrics


def test_deterministic_cuda_training_repeats_exactly():
    cfg = _cuda_experiment(deterministic=True)
    first, _ = run_experiment(cfg)
    second, _ = run_experiment(cfg)
    assert first.loss_curve == second.loss_curve and first.metrics == second.metrics


def _seen_gpus(_: int) -> tuple[str | None, int]:
    import torch as t

    return os.environ.get("CUDA_VISIBLE_DEVICES"), t.cuda.device_count()


def test_each_process_worker_sees_exactly_its_gpu():
    executor = make_executor("process", device="cuda", workers_per_gpu=2)
    try:
        seen = [f.result(timeout=300) for f in [executor.submit(_seen_gpus, i) for i in range(4)]]
    finally:
        executor.shutdown()
    assert all(count == 1 for _, count in seen)
    assert {name for name, _ in seen} <= {str(i) for i in range(torch.cuda.device_count())}
