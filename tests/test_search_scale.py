"""The search at scale: the config file, presets, COCO and GPU settings reaching the proxy training, the
circuit breaker, the device-keyed result cache, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.runs.rundir import RunDir
from autoloss.search.config import ConfigError, SearchConfig, budget_config, load_config_file, validate
from autoloss.search.proxy import EVALUATIONS, ProxyBroken, experiment_dict, failure_kind
from search_helpers import serial_runner

NO_CUDA = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine where --device cuda cannot train"
)


def test_config_file_round_trips_the_run_directory_schema(tmp_path):
    cfg = budget_config("smoke").replace(
        evolution={"seed": 7, "rungs": "1x1,3x2"},
        proxy={"batch_size": 4, "amp": "bf16", "train_subset": 50, "resize": "keep-aspect"},
        backend={"workers_per_gpu": 2, "max_same_failures": 3},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert load_config_file(str(path), SearchConfig()) == cfg
    # a partial file changes only what it names
    path.write_text("proxy:\n  lr: 0.005\nevolution:\n  generations: 5\n")
    partial = load_config_file(str(path), budget_config("smoke"))
    assert (partial.proxy.lr, partial.evolution.generations) == (0.005, 5)
    assert partial.proxy.preset == "tiny" and partial.evolution.top_k == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("proxy:\n  learning_rate: 0.1\n", "unknown proxy setting.*learning_rate"),
        ("training:\n  lr: 0.1\n", "unknown section.*training"),
        ("proxy: [1, 2]\n", "must be a mapping"),
        ("proxy: {lr: 0.1\n", "malformed YAML"),
        ("version: 1\n", "config version 1"),
    ],
)
def test_a_bad_config_file_names_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config_file(str(path), SearchConfig())
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(str(tmp_path / "missing.yaml"), SearchConfig())


def test_a_version_2_run_directory_config_is_read_with_the_new_defaults():
    old = budget_config("smoke").to_dict()
    old["version"] = 2
    for name in ("workers_per_gpu", "max_same_failures"):
        old["backend"].pop(name)
    old["backend"]["gpus_per_trial"] = 0.0
    cfg = SearchConfig.from_dict(old)
    assert cfg.backend.max_same_failures == 4 and cfg.proxy.amp is None


def test_proxy_settings_reach_the_training(tmp_path):
    cfg = budget_config("default").replace(
        proxy={
            "data": "train.json",
            "val_data": "val.json",
            "images": "imgs",
            "val_images": "val_imgs",
            "train_subset": 100,
            "resize": "keep-aspect",
            "min_size": 320,
            "max_size": 512,
            "batch_size": 8,
            "lr": 0.01,
            "optimizer": "adamw",
            "amp": "fp16",
            "deterministic": True,
            "loader_workers": 2,
            "backbone": "resnet18",
            "backbone_weights": "r18.pth",
        },
        backend={"cpus_per_trial": 3},
    )
    exp = experiment_dict(cfg)
    for key in ("val_data", "images", "val_images", "train_subset", "resize", "min_size", "max_size"):
        assert exp[key] == getattr(cfg.proxy, key)
    assert exp["backbone_weights"] == "r18.pth" and exp["image_size"] is None
    train = exp["train"]
    assert (train["batch_size"], train["lr"], train["optimizer"], train["amp"]) == (8, 0.01, "adamw", "fp16")
    assert train["deterministic"] is True and train["loader_workers"] == 2
    assert train["threads"] == 3  # --cpus-per-trial is each training's torch threads


def test_a_coco_preset_brings_its_model_and_needs_your_data():
    cfg = budget_config("default").replace(proxy={"preset": "retinanet-r50-coco", "detector": None})
    with pytest.raises(ConfigError, match=r"--data TRAIN\.json"):
        validate(cfg)
    cfg = cfg.replace(proxy={"data": "train.json", "iterations": None, "backbone": None})
    validate(cfg)
    assert cfg.cls_branch == "cls-sigmoid"
    exp = experiment_dict(cfg)
    assert (exp["detector"], exp["backbone"], exp["pretrained"]) == ("retinanet", "resnet50", "DEFAULT")
    assert exp["resize"] == "keep-aspect" and exp["train_subset"] == 10_000
    assert exp["train"]["amp"] == "bf16" and exp["train"]["iterations"] == 2000
    with pytest.raises(ConfigError, match="unknown preset"):
        validate(cfg.replace(proxy={"preset": "yolo"}))


def test_presets_are_listed():
    r = CliRunner().invoke(cli, ["presets"])
    assert r.exit_code == 0, r.output
    for name in ("fcos-shapes", "fcos-r50-coco", "retinanet-r50-coco", "faster-rcnn-r50-coco", "tiny"):
        assert name in r.output
    assert "your COCO data" in r.output


def test_ray_refuses_zero_gpu_trials_on_cuda():
    cfg = budget_config("smoke").replace(
        proxy={"device": "cuda"}, backend={"backend": "ray", "gpus_per_trial": 0.0}
    )
    with pytest.raises(ConfigError, match="hide every GPU"):
        validate(cfg)


def always_fails(experiment, cls_loss, reg_loss):
    """A stand-in training whose proxy is broken: the same error, with a different number each time."""
    always_fails.calls += 1
    return {"status": "failed", "reason": f"OSError: worker {1000 + always_fails.calls} cannot read x.jpg"}


def alternating(experiment, cls_loss, reg_loss):
    alternating.calls += 1
    if alternating.calls % 2:
        return {"status": "diverged", "reason": "loss is nan"}
    return {"status": "failed", "reason": "RuntimeError: this loss breaks"}


def test_the_circuit_breaker_stops_after_repeated_identical_failures_keeping_them(tmp_path):
    cfg = budget_config("smoke").replace(backend={"max_same_failures": 3})
    run = RunDir.create(tmp_path / "run", cfg.to_dict())
    always_fails.calls = 0
    runner = serial_runner(cfg, run, always_fails)
    with pytest.raises(ProxyBroken, match=r"3 proxy trainings in a row failed the same way.*x\.jpg"):
        runner.evaluate([("a", "b", s) for s in range(10)])
    assert always_fails.calls == 3
    assert len((Path(run.path) / EVALUATIONS).read_text().splitlines()) == 3  # finished work is kept
    assert failure_kind("OSError: worker 12 at 3.5 s") == failure_kind("OSError: worker 7 at 10.25 s")


def test_the_circuit_breaker_ignores_failures_that_are_the_losses(tmp_path):
    cfg = budget_config("smoke").replace(backend={"max_same_failures": 2})
    run = RunDir.create(tmp_path / "run", cfg.to_dict())
    alternating.calls = 0
    runner = serial_runner(cfg, run, alternating)
    results = runner.evaluate([("a", "b", s) for s in range(8)])  # a divergence breaks every streak
    assert len(results) == 8


def echo_device(experiment, cls_loss, reg_loss):
    return {"status": "ok", "metrics": {"AP": 0.5}, "device": experiment["train"]["device"]}


def test_results_are_cached_per_device(tmp_path):
    cfg = budget_config("smoke")
    run = RunDir.create(tmp_path / "run", cfg.to_dict())
    cpu = serial_runner(cfg, run, echo_device)
    [first] = cpu.evaluate([("a", "b", 0)])
    # the same run resumed on a GPU: the CPU result is not reused, and both stay in the journal
    gpu = serial_runner(cfg.replace(proxy={"device": "cuda"}), run, echo_device)
    [second] = gpu.evaluate([("a", "b", 0)])
    assert (first["device"], second["device"]) == ("cpu", "cuda")
    records = [json.loads(line) for line in (Path(run.path) / EVALUATIONS).read_text().splitlines()]
    assert len(records) == 2 and records[0]["id"] != records[1]["id"] and records[1]["device"] == "cuda"
    again = serial_runner(cfg, run, echo_device)
    assert again.evaluate([("a", "b", 0)])[0]["device"] == "cpu"
    assert len((Path(run.path) / EVALUATIONS).read_text().splitlines()) == 2


@NO_CUDA
def test_device_cuda_without_cuda_is_one_line_and_exit_2(tmp_path):
    for backend in ("serial", "process"):
        r = CliRunner().invoke(
            cli,
            [
                "search",
                "--budget",
                "smoke",
                "--backend",
                backend,
                "--device",
                "cuda",
                "--out",
                str(tmp_path / backend),
            ],
        )
        assert r.exit_code == 2, r.output
        assert r.output.count("\n") == 1 and "--device cuda" in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_a_proxy_whose_default_cannot_train_stops_with_exit_1(tmp_path):
    weights = tmp_path / "r18.pth"
    weights.write_bytes(b"not a state dict")
    out = tmp_path / "broken"
    args = ["search", "--budget", "smoke", "--backend", "serial", "--backbone", "resnet18"]
    r = CliRunner().invoke(cli, [*args, "--backbone-weights", str(weights), "--out", str(out), "--quiet"])
    assert r.exit_code == 1, r.output
    # the circuit breaker or the baseline check, whichever sees it first, names the cause
    assert "failed" in r.output and str(weights) in r.output
    assert "autoloss resume" in r.output and "Traceback" not in r.output
    assert not (out / "summary.json").exists()
    assert (out / EVALUATIONS).is_file()  # the failed trainings are recorded
