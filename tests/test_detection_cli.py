"""`autoloss train` / `autoloss eval`: JSON output, saved runs, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.cli.train_cmd import eval_, train

TINY = ["--preset", "tiny", "--iterations", "4"]


def _run(command, args):
    result = CliRunner().invoke(command, args)
    return result.exit_code, result.stdout, result.stderr


def test_train_json_on_tiny_preset_saves_a_run_that_eval_reproduces(tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = _run(train, [*TINY, "--json", "--out", str(out)])
    assert code == 0, stdout
    result = json.loads(stdout)
    assert result["status"] == "ok" and result["iterations"] == 4
    assert set(result["metrics"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert json.loads((out / "metrics.json").read_text()) == result
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["detector"] == "fcos" and config["train"]["iterations"] == 4
    # eval reads detector, data and size from the config.yaml beside the weights
    code, stdout, _ = _run(eval_, ["--weights", str(out / "weights.pt"), "--json"])
    assert code == 0, stdout
    assert json.loads(stdout)["metrics"] == result["metrics"]


def test_train_table_output_with_named_and_expression_losses():
    args = [*TINY, "--cls-loss", "bce", "--reg-loss", "Add(1,Neg(Div(I,U)))"]
    code, stdout, _ = _run(train, args)
    assert code == 0, stdout
    assert "AP50" in stdout and "4 iterations" in stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detector", "yolo"], "'yolo' is not one of"),
        (["--cls-loss", "ce"], "--cls-loss: cannot use 'ce' as a cls-sigmoid loss"),
        (["--detector", "faster_rcnn", "--cls-loss", "focal"], "--cls-loss"),
        (["--reg-loss", "Foo(I)"], "unknown operator 'Foo'"),
        (["--data", "/nonexistent/ann.json"], "file not found"),
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--iterations", "3", "--epochs", "1"], "not both"),
        (["--lr", "-1"], "lr must be > 0"),
    ],
)
def test_bad_train_input_is_one_line_and_exit_2(args, message):
    code, stdout, stderr = _run(train, ["--preset", "tiny", *args])
    assert code == 2
    assert message in stderr and "Traceback" not in stderr + stdout


def test_malformed_json_dataset_is_exit_2(tmp_path):
    bad = tmp_path / "ann.json"
    bad.write_text("{oops")
    code, _, stderr = _run(train, ["--preset", "tiny", "--data", str(bad)])
    assert code == 2 and "malformed JSON" in stderr and str(bad) in stderr


def test_eval_bad_inputs_exit_2(tmp_path):
    code, _, stderr = _run(eval_, ["--weights", str(tmp_path / "missing.pt")])
    assert code == 2 and "file not found" in stderr
    garbage = tmp_path / "weights.pt"
    garbage.write_bytes(b"not a checkpoint")
    code, _, stderr = _run(eval_, ["--weights", str(garbage), "--data", "shapes", "--image-size", "64"])
    assert code == 2 and "cannot load weights" in stderr


def test_eval_weights_for_another_detector_exit_2(tmp_path):
    out = tmp_path / "run"
    assert _run(train, [*TINY, "--json", "--out", str(out)])[0] == 0
    code, _, stderr = _run(eval_, ["--weights", str(out / "weights.pt"), "--detector", "retinanet"])
    assert code == 2 and "do not fit a retinanet" in stderr


def test_diverged_run_exits_1_with_reason():
    code, stdout, stderr = _run(train, [*TINY, "--json", "--reg-loss", "Mul(1e30,Sub(U,I))"])
    assert code == 1
    assert json.loads(stdout)["status"] == "diverged" and "run diverged" in stderr


def test_commands_are_exported_for_the_cli_group():
    from autoloss.cli import train_cmd

    assert [c.name for c in train_cmd.COMMANDS] == ["train", "eval"]


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--amp", "bf16"],
        ["search", "--budget", "smoke", "--amp", "fp16"],
        ["transfer", "--cls-loss", "bce", "--amp", "bf16"],
        ["fidelity", "--target", "fcos:shapes:64:20", "--no-panel", "--loss", "bce;default", "--amp", "bf16"],
    ],
)
def test_an_explicit_amp_on_cpu_is_refused_in_one_line(args, tmp_path):
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "--amp needs --device cuda" in r.output and "Traceback" not in r.output


def test_amp_off_and_a_preset_that_prefers_bf16_still_work_on_cpu(tmp_path):
    from autoloss.detection.task import DetectionTask

    r = CliRunner().invoke(cli, ["train", "--preset", "tiny", "--iterations", "1", "--amp", "off", "--json"])
    assert r.exit_code == 0, r.output
    # the COCO presets prefer bf16: on CPU that preference is ignored, not refused
    task = DetectionTask.from_settings({"preset": "fcos-r50-coco", "data": "bccd"})
    assert task.experiment.train.amp == "bf16"
    task.check()
