"""Training and evaluation: determinism, the divergence guard, the schedule, COCO mAP cross-check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from autoloss.detection.coco_eval import coco_ground_truth, coco_map, detections_to_coco
from autoloss.detection.presets import PROXY_PRESETS, preset
from autoloss.detection.runner import ExperimentConfig, RunResult
from autoloss.detection.shapes import generate_shapes
from autoloss.detection.task import evaluate_losses, run_experiment
from autoloss.detection.train import TrainConfig, lr_factor, validate_train_config
from test_detection_doubles import CE, FOCAL, GIOU, Double, exploding, nan_loss


@pytest.mark.slow
def test_tiny_training_is_deterministic_and_learns():
    before = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    first = evaluate_losses(preset_name="tiny", seed=0)
    second = evaluate_losses(preset_name="tiny", seed=0)
    assert first.status == "ok", first.reason
    assert first.metrics == second.metrics and first.loss_curve == second.loss_curve
    assert first.final_loss == second.final_loss
    assert first.metrics["AP50"] > 0.0  # something was learned, so equal metrics are not trivially zero
    assert first.loss_curve[-1] < first.loss_curve[0]
    other_seed = evaluate_losses(preset_name="tiny", seed=1)
    assert other_seed.loss_curve != first.loss_curve
    # library code leaves the caller's global state as it found it
    assert torch.equal(torch.random.get_rng_state(), before) and torch.get_num_threads() == threads


def test_result_is_json_serialisable_and_round_trips():
    result = evaluate_losses(preset_name="tiny", seed=0, train={"iterations": 3})
    raw = json.loads(result.to_json())
    assert raw["status"] == "ok" and set(raw["metrics"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert raw["config"]["cls_loss"] == "default" and raw["config"]["train"]["iterations"] == 3
    assert RunResult.from_dict(raw) == result


@pytest.mark.parametrize("make", [exploding, nan_loss], ids=["explodes", "nan"])
@pytest.mark.parametrize("branch", ["cls-sigmoid", "reg"])
def test_divergence_guard_stops_without_raising(make, branch):
    losses = {"cls_loss": make(branch)} if branch != "reg" else {"reg_loss": make(branch)}
    result = evaluate_losses(preset_name="tiny", seed=0, **losses)
    assert result.status == "diverged"
    assert result.iterations == 1 and "iteration 1" in result.reason
    assert result.metrics == {} and result.ap == 0.0
    json.dumps(result.to_dict(), allow_nan=False)  # a diverged result is still valid JSON


def test_slow_explosion_is_caught_relative_to_the_early_loss():
    calls = {"n": 0}

    def growing(I, U, E):
        calls["n"] += 1
        scale = 1.0 if calls["n"] <= 12 else 1e3  # fine for a while, then 1000x: over 100x the early loss
        return scale * GIOU.fn(I, U, E)

    result = evaluate_losses(reg_loss=Double("reg", "growing", growing), preset_name="tiny")
    assert result.status == "diverged" and "early value" in result.reason and result.iterations == 13


def test_a_crashing_loss_is_a_failed_result():
    def broken(X, Q, PY, NY):
        raise RuntimeError("boom")

    result = evaluate_losses(Double("cls-sigmoid", "broken", broken), preset_name="tiny")
    assert result.status == "failed" and "boom" in result.reason


def test_wrong_branch_loss_is_a_failed_result_not_an_exception():
    result = evaluate_losses(CE, preset_name="tiny")
    assert result.status == "failed" and "cls-softmax" in result.reason


def test_two_stage_and_retinanet_train_with_routed_losses():
    for detector, cls in (("faster_rcnn", CE), ("retinanet", FOCAL)):
        result = evaluate_losses(
            cls, GIOU, preset_name="tiny", detector=detector, train={"iterations": 2, "batch_size": 4}
        )
        assert result.status == "ok", result.reason
        assert math.isfinite(result.final_loss)


def test_time_budget_stops_early_with_ok_status():
    result = evaluate_losses(preset_name="tiny", train={"time_budget_s": 1e-9})
    assert result.status == "ok" and result.iterations == 0 and "time budget" in result.reason


def test_lr_schedule_warms_up_linearly_then_decays_to_zero():
    assert lr_factor(0, 100, 10, 0.001) == 0.001
    assert lr_factor(5, 100, 10, 0.001) == pytest.approx(0.001 + 0.999 * 0.5)
    assert lr_factor(10, 100, 10, 0.001) == 1.0
    assert lr_factor(55, 100, 10, 0.001) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 0.001) == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of iterations and epochs"),
        ({"iterations": 5, "epochs": 1}, "exactly one"),
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"iterations": 5, "optimizer": "rmsprop"}, "optimizer"),
        ({"iterations": 5, "device": "tpu"}, "device"),
        ({"iterations": 5, "flip_prob": 2.0}, "flip_prob"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        validate_train_config(TrainConfig(**kwargs))


def test_experiment_config_validation_raises_before_any_work():
    with pytest.raises(ValueError, match="unknown detector"):
        run_experiment(ExperimentConfig(detector="yolo"))
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")
    with pytest.raises(ValueError, match="unknown train setting"):
        ExperimentConfig.from_dict({"train": {"iterations": 3, "lr_max": 1}})
    cfg = ExperimentConfig.from_dict(PROXY_PRESETS["tiny"].to_dict())
    assert cfg == PROXY_PRESETS["tiny"]


def _random_detections(data, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for boxes, labels in zip(data.boxes, data.labels, strict=True):
        jitter = boxes + rng.normal(0, 3, boxes.shape)
        xy = rng.uniform(0, 100, (4, 2))
        junk = np.concatenate([xy, xy + rng.uniform(5, 40, (4, 2))], axis=1)
        out.append(
            {
                "boxes": np.concatenate([jitter, junk]).astype(np.float32),
                "scores": rng.random(len(boxes) + 4).astype(np.float32),
                "labels": np.concatenate([labels, rng.integers(1, 6, 4)]),
            }
        )
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_faster_coco_eval_equals_pycocotools(seed):
    data = generate_shapes("val", 60, 128, seed=seed)
    gt = coco_ground_truth(data)
    results = detections_to_coco(_random_detections(data, seed))
    fast = coco_map(gt, results)
    reference = coco_map(gt, results, backend="pycocotools")
    assert fast.keys() == reference.keys()
    for key in fast:
        assert fast[key] == pytest.approx(reference[key], abs=1e-9), key
    assert 0.05 < fast["AP"] < 0.95  # a partial score: the check covers matching, not just 0 or 1


def test_perfect_and_empty_detections():
    data = generate_shapes("val", 10, 128, seed=0)
    gt = coco_ground_truth(data)
    perfect = [
        {"boxes": b, "scores": np.ones(len(b)), "labels": lab}
        for b, lab in zip(data.boxes, data.labels, strict=True)
    ]
    assert coco_map(gt, detections_to_coco(perfect))["AP"] == pytest.approx(1.0)
    assert coco_map(gt, [])["AP"] == 0.0


def _nondeterministic_giou(**inputs):
    # put_ without accumulate has no deterministic kernel on any device: it stands in, on CPU, for the
    # CUDA kernels (RoIAlign's backward, ...) that torch refuses under deterministic algorithms
    torch.zeros(2).put_(torch.tensor([0]), torch.tensor([1.0]))
    return GIOU.fn(**inputs)


def test_deterministic_is_strict_and_names_the_op_it_cannot_run():
    seen = []

    def probe(**inputs):
        seen.append(
            (
                torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled(),
            )
        )
        return GIOU.fn(**inputs)

    train = {"iterations": 2, "deterministic": True}
    ok = evaluate_losses(preset_name="tiny", seed=0, reg_loss=Double("reg", "probe", probe), train=train)
    assert ok.status == "ok" and seen and all(s == (True, False) for s in seen)  # strict, not warn-only
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the caller
    bad = Double("reg", "put", _nondeterministic_giou)
    refused = evaluate_losses(preset_name="tiny", seed=0, reg_loss=bad, train=train)
    assert refused.status == "failed"
    assert refused.reason.startswith("--deterministic: put_ has no deterministic implementation on cpu")
    allowed = evaluate_losses(preset_name="tiny", seed=0, reg_loss=bad, train={"iterations": 2})
    assert allowed.status == "ok", allowed.reason


def test_deterministic_faster_rcnn_on_cuda_is_refused_before_training():
    from autoloss.detection.runner import validate_experiment

    cfg = ExperimentConfig(
        detector="faster_rcnn", train=TrainConfig(iterations=2, device="cuda", deterministic=True)
    )
    with pytest.raises(ValueError, match="roi_align_backward_kernel"):
        validate_experiment(cfg)
    fcos = ExperimentConfig(
        detector="fcos", train=TrainConfig(iterations=2, device="cuda", deterministic=True)
    )
    with pytest.raises(ValueError) as other:  # only the CUDA check of this CPU machine stops fcos
        validate_experiment(fcos)
    assert "roi_align" not in str(other.value)
    validate_experiment(
        ExperimentConfig(detector="faster_rcnn", train=TrainConfig(iterations=2, deterministic=True))
    )
