"""CheckConfig: calibrated defaults validate, bad settings fail with a message naming them."""

from __future__ import annotations

import dataclasses
import json

import pytest

from autoloss.checks import CheckConfig, CPVConfig, MOSConfig, ProbeConfig
from autoloss.checks.config import resolve_config


def test_defaults_validate_and_round_trip_through_plain_data():
    config = CheckConfig()
    assert config.validate() is config
    data = json.loads(json.dumps(config.to_dict()))  # plain data, as a YAML/JSON file would hold it
    assert CheckConfig.from_dict(data) == config
    assert hash(CheckConfig()) == hash(config)  # frozen: probes and baselines are cached per config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CheckConfig(probe=ProbeConfig(rows=2)), r"probe\.rows must be an integer >= 8"),
        (CheckConfig(probe=ProbeConfig(key_digits=0)), r"probe\.key_digits"),
        (CheckConfig(cpv=CPVConfig(grid=3)), r"cpv\.grid must be an integer >= 5"),
        (CheckConfig(cpv=CPVConfig(fade_logit=5.0)), r"cpv\.fade_logit \(5\.0\) must be >= cpv\.logit_span"),
        (CheckConfig(cpv=CPVConfig(rtol=-1.0)), r"cpv\.rtol must be in \[0, 1\)"),
        (CheckConfig(cpv=CPVConfig(unsaturated=(0.9, 0.1))), r"cpv\.unsaturated must be \(lo, hi\)"),
        (CheckConfig(cpv=CPVConfig(fg_quality=(0.9, 0.3))), r"cpv\.fg_quality must be increasing"),
        (CheckConfig(cpv=CPVConfig(scale_ratio=1.0)), r"cpv\.scale_factor and cpv\.scale_ratio must be > 1"),
        (CheckConfig(mos=MOSConfig(cls_steps=0)), r"mos\.cls_steps must be an integer >= 1"),
        (CheckConfig(mos=MOSConfig(reg_lr=0.0)), r"mos\.reg_lr must be a positive number"),
        (CheckConfig(mos=MOSConfig(cls_background=1.0)), r"mos\.cls_background must be in \(0, 1\)"),
        (CheckConfig(mos=MOSConfig(cls_min_ratio=3.0)), r"mos\.cls_min_ratio is a ratio"),
        (CheckConfig(mos=MOSConfig(reg_boxes=4)), r"mos\.reg_boxes must be an integer >= 8"),
    ],
)
def test_bad_settings_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        config.validate()


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) gird in checks\.cpv"):
        CheckConfig.from_dict({"cpv": {"gird": 9}})
    with pytest.raises(ValueError, match=r"unknown section\(s\) mso"):
        CheckConfig.from_dict({"mso": {}})


def test_resolve_config_accepts_none_dict_and_config():
    assert resolve_config(None) == CheckConfig()
    custom = resolve_config({"mos": {"cls_steps": 20}})
    assert custom.mos.cls_steps == 20 and custom.cpv == CPVConfig()
    assert resolve_config(dataclasses.replace(CheckConfig())) == CheckConfig()
    with pytest.raises(TypeError, match="config must be a CheckConfig"):
        resolve_config(42)


def test_a_preset_trains_its_own_length_from_the_cli_a_config_file_and_python(tmp_path, monkeypatch):
    import yaml
    from click.testing import CliRunner

    import autoloss.evolution.api as api
    from autoloss.cli import cli
    from autoloss.detection.task import DetectionTask
    from autoloss.evolution.config import budget_config, load_config_file

    settings = {"preset": "fcos-r50-coco", "data": "bccd"}
    captured = []

    def capture(cfg):
        captured.append(cfg)
        raise RuntimeError("captured")  # stop before anything trains

    monkeypatch.setattr(api, "preflight", capture)
    CliRunner().invoke(cli, ["search", "--preset", "fcos-r50-coco", "--data", "bccd", "--out", str(tmp_path)])
    [from_cli] = captured
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({"task": {"settings": settings}}))
    from_file = load_config_file(str(config), budget_config("default"))
    from_python = budget_config("default").replace(task={"settings": settings})
    for cfg in (from_cli, from_file, from_python):
        assert cfg.task == from_python.task
    assert (from_python.task.iterations, from_python.task.epochs) == (None, None)
    # ... so the task's own length is what trains: the preset's 2,000 iterations, not the budget's 300
    assert DetectionTask.from_settings(from_python.task.settings).default_length() == (2000, None)
    # A length given beside the preset still wins, and a budget's own preset keeps the budget's length.
    given = budget_config("default").replace(task={"settings": settings, "iterations": 50})
    assert given.task.iterations == 50
    assert budget_config("smoke").task.iterations == 30
