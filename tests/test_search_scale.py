"""The search at scale: the config file, presets, COCO and GPU settings reaching the proxy training, the
circuit breaker, the device-keyed result cache, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.evolution.config import (
    ConfigError,
    SearchConfig,
    budget_config,
    load_config_file,
    resolve_task,
    validate,
)
from autoloss.evolution.proxy import EVALUATIONS, ProxyBroken, base_schedule, failure_kind
from autoloss.runs.rundir import RunDir
from search_helpers import serial_runner

NO_CUDA = pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="needs a machine where --device cuda cannot train"
)


def test_config_file_round_trips_the_run_directory_schema(tmp_path):
    cfg = budget_config("smoke").replace(
        evolution={"seed": 7, "rungs": "1x1,3x2"},
        task={
            "settings": {
                "train": {"batch_size": 4, "amp": "bf16"},
                "train_subset": 50,
                "resize": "keep-aspect",
            }
        },
        backend={"workers_per_gpu": 2, "max_same_failures": 3},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    assert load_config_file(str(path), SearchConfig()) == cfg
    # a partial file changes only what it names
    path.write_text("task:\n  settings: {train: {lr: 0.005}}\nevolution:\n  generations: 5\n")
    partial = load_config_file(str(path), budget_config("smoke"))
    assert (partial.task.settings["train"]["lr"], partial.evolution.generations) == (0.005, 5)
    assert partial.task.settings["preset"] == "tiny" and partial.evolution.top_k == 2  # settings merge


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("task:\n  learning_rate: 0.1\n", "unknown task setting.*learning_rate"),
        ("training:\n  lr: 0.1\n", "unknown section.*training"),
        ("task: [1, 2]\n", "must be a mapping"),
        ("task: {lr: 0.1\n", "malformed YAML"),
        ("proxy:\n  lr: 0.1\n", "proxy section is now `task`"),
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
    old = {
        "version": 2,
        "evolution": budget_config("smoke").to_dict()["evolution"],
        "filters": {"cpv": True, "mos": True},
        "proxy": {
            "detector": "fcos",
            "backbone": "tiny",
            "data": "shapes",
            "preset": "tiny",
            "iterations": 30,
        },
        "backend": {"backend": "serial", "workers": 2, "gpus_per_trial": 0.0},
    }
    cfg = SearchConfig.from_dict(old)
    assert cfg.backend.max_same_failures == 4
    assert (cfg.task.name, cfg.task.iterations, cfg.task.device) == ("detection", 30, "cpu")
    assert cfg.task.settings == {"preset": "tiny", "data": "shapes", "detector": "fcos", "backbone": "tiny"}


def test_a_version_3_proxy_section_trains_what_it_trained():
    """Every version-3 proxy setting lands where the detection task reads it; None meant the preset's."""
    proxy = {
        "detector": None,
        "backbone": "resnet18",
        "data": "train.json",
        "images": "imgs",
        "val_data": "val.json",
        "val_images": "val_imgs",
        "train_subset": 100,
        "preset": "fcos-shapes",
        "iterations": None,
        "epochs": 2,
        "device": "cpu",
        "resize": "keep-aspect",
        "image_size": None,
        "min_size": 320,
        "max_size": 512,
        "train_size": None,
        "val_size": None,
        "batch_size": 8,
        "lr": 0.01,
        "optimizer": "adamw",
        "amp": "fp16",
        "deterministic": True,
        "loader_workers": 2,
        "pretrained": None,
        "backbone_weights": "r18.pth",
        "trainable_layers": None,
    }
    raw = {**budget_config("default").to_dict(), "version": 3, "proxy": proxy}
    del raw["task"]
    cfg = SearchConfig.from_dict(raw).replace(backend={"cpus_per_trial": 3})
    exp = cfg.load_task().trial_config(base_schedule(cfg))
    for key in ("val_data", "images", "val_images", "train_subset", "resize", "min_size", "max_size"):
        assert getattr(exp, key) == proxy[key]
    assert exp.backbone_weights == "r18.pth" and exp.image_size is None and exp.detector == "fcos"
    t = exp.train
    assert (t.batch_size, t.lr, t.optimizer, t.amp) == (8, 0.01, "adamw", "fp16")
    assert t.deterministic is True and t.loader_workers == 2
    assert (t.epochs, t.iterations) == (2, None)
    assert t.threads == 3  # --cpus-per-trial is each training's torch threads


def test_a_coco_preset_brings_its_model_and_needs_your_data(tmp_path):
    cfg = budget_config("default").replace(task={"settings": {"preset": "retinanet-r50-coco"}})
    with pytest.raises(ConfigError, match=r"--data TRAIN\.json"):
        validate(cfg)
    (tmp_path / "train.json").write_text("{}")
    cfg = cfg.replace(task={"settings": {"data": str(tmp_path / "train.json")}})
    validate(cfg)
    assert cfg.cls_branch == "cls-sigmoid"
    resolved = resolve_task(cfg)
    settings = resolved.task.settings
    assert (settings["detector"], settings["backbone"], settings["pretrained"]) == (
        "retinanet",
        "resnet50",
        "DEFAULT",
    )
    assert settings["resize"] == "keep-aspect" and settings["train_subset"] == 10_000
    assert settings["train"]["amp"] == "bf16" and resolved.task.iterations == 2000  # the preset's length
    with pytest.raises(ConfigError, match="unknown preset"):
        validate(cfg.replace(task={"settings": {"preset": "yolo"}}))


def test_presets_are_listed():
    r = CliRunner().invoke(cli, ["presets"])
    assert r.exit_code == 0, r.output
    for name in ("fcos-shapes", "fcos-r50-coco", "retinanet-r50-coco", "faster-rcnn-r50-coco", "tiny"):
        assert name in r.output
    assert "your COCO data" in r.output


def test_ray_refuses_zero_gpu_trials_on_cuda():
    cfg = budget_config("smoke").replace(
        task={"device": "cuda"}, backend={"backend": "ray", "gpus_per_trial": 0.0}
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
    return {"status": "ok", "metrics": {"AP": 0.5}, "device": experiment["schedule"]["device"]}


def test_results_are_cached_per_device(tmp_path):
    cfg = budget_config("smoke")
    run = RunDir.create(tmp_path / "run", cfg.to_dict())
    cpu = serial_runner(cfg, run, echo_device)
    [first] = cpu.evaluate([("a", "b", 0)])
    # the same run resumed on a GPU: the CPU result is not reused, and both stay in the journal
    gpu = serial_runner(cfg.replace(task={"device": "cuda"}), run, echo_device)
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
