"""Proxy fidelity: task parsing, rank agreement by hand, the panel, survivors from a run, the command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from autoloss.cli import cli
from autoloss.fidelity import default_panel, parse_task, rank_agreement, survivors_from_run
from autoloss.fidelity.ranks import top_k_overlap
from autoloss.fidelity.tasks import FidelityError
from autoloss.loss import Loss


def test_parse_task_reads_detector_data_size_iterations(tmp_path):
    t = parse_task("fcos:shapes:256:300")
    assert (t.detector, t.data, t.image_size, t.iterations) == ("fcos", "shapes", 256, 300)
    assert t.name == "fcos-tiny-shapes-256px-300it"
    coco = tmp_path / "set" / "ann.json"
    coco.parent.mkdir()
    coco.write_text("{}")
    t = parse_task(f"retinanet:{coco}:native:50")
    assert t.image_size is None and t.data == str(coco) and t.name == "retinanet-tiny-set-native-50it"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fcos:shapes:128", "DETECTOR:DATA:SIZE:ITERATIONS"),
        ("yolo:shapes:128:10", "unknown detector"),
        ("fcos:missing.json:128:10", "neither a dataset name .* nor an existing"),
        ("fcos:shapes:100:10", "multiple of 32"),
        ("fcos:shapes:big:10", "must be integers"),
        ("fcos:shapes:128:0", "iterations must be positive"),
    ],
)
def test_bad_tasks_are_refused_with_the_fix(text, message):
    with pytest.raises(FidelityError, match=message):
        parse_task(text)


def test_the_batched_bootstrap_statistics_equal_scipys_row_by_row():
    import warnings

    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    from autoloss.fidelity.ranks import _rho, _tau

    rng = np.random.default_rng(3)
    # Bootstrap resamples repeat losses: rows with ties, and rows where one side is all one value.
    x = rng.integers(0, 5, size=(200, 9)).astype(float)
    y = x + rng.integers(-2, 3, size=x.shape)
    x[0], y[1] = 1.0, 2.0
    with warnings.catch_warnings():  # scipy warns about the constant rows, which are the point here
        warnings.simplefilter("ignore")
        want_tau = np.nan_to_num([kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)], nan=0.0)
        want_rho = np.nan_to_num([spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)], nan=0.0)
    np.testing.assert_allclose(_tau(x, y), want_tau, atol=1e-12)
    np.testing.assert_allclose(_rho(x, y), want_rho, atol=1e-12)
    assert _tau(x, y)[0] == 0.0 and _rho(x, y)[1] == 0.0


def test_rank_agreement_by_hand():
    # One swapped neighbour pair among 4: 5 concordant, 1 discordant pair -> τ = 4/6;
    # rank differences (0, 1, 1, 0) -> ρ = 1 - 6 * 2 / (4 * 15) = 0.8.
    a = rank_agreement([0.1, 0.2, 0.3, 0.4], [0.1, 0.3, 0.2, 0.4])
    assert a["kendall_tau"] == pytest.approx(2 / 3) and a["spearman_rho"] == pytest.approx(0.8)
    assert a["top1_in_target_top3"] and a["top3_overlap"] == pytest.approx(1.0)
    lo, hi = a["kendall_tau_ci"]
    assert -1 <= lo <= a["kendall_tau"] <= hi <= 1
    reversed_ = rank_agreement([1.0, 2.0, 3.0, 4.0, 5.0], [5.0, 4.0, 3.0, 2.0, 1.0])
    assert reversed_["kendall_tau"] == pytest.approx(-1.0) and not reversed_["top1_in_target_top3"]
    assert top_k_overlap([1, 2, 3, 4, 5], [5, 4, 3, 2, 1], 3) == pytest.approx(1 / 3)  # only the middle one
    with pytest.raises(ValueError, match="at least 3 losses"):
        rank_agreement([1, 2], [1, 2])
    with pytest.raises(ValueError, match="one score per loss"):
        rank_agreement([1, 2, 3], [1, 2])


def test_the_built_in_panel_is_wide_enough_and_parses():
    for branch in ("cls-sigmoid", "cls-softmax"):
        panel = default_panel(branch)
        assert len({(e.cls, e.reg) for e in panel}) == len(panel)
        assert panel[0].label == "default" and panel[1].label == "published"
        for e in panel:
            if e.cls != "default":
                assert Loss.parse(e.cls, branch)
            if e.reg != "default":
                assert Loss.parse(e.reg, "reg")
    assert len(default_panel("cls-sigmoid")) >= 12  # the benchmark's panel


def test_survivors_come_from_a_run_best_mos_first_alternating_branches(tmp_path):
    lines = [
        {"branch": "cls-sigmoid", "stage": "screened", "text": "Mul(PY,X)", "mos_score": 0.2},
        {"branch": "cls-sigmoid", "stage": "proxy", "text": "Mul(NY,X)", "mos_score": 0.3},
        {"branch": "cls-sigmoid", "stage": "cpv", "text": "Neg(X)", "mos_score": None},
        {"branch": "reg", "stage": "screened", "text": "Sub(1,Div(I,U))", "mos_score": 0.9},
        {"branch": "reg", "stage": "screened", "text": "Sub(1,Div(I,U))", "mos_score": 0.9},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + '\n{"branch": "reg", "sta'  # a torn last line
    (tmp_path / "events.jsonl").write_text(text)
    got = survivors_from_run(tmp_path, 5, "cls-sigmoid")
    assert [(e.cls, e.reg) for e in got] == [
        ("Mul(NY,X)", "default"),
        ("default", "Sub(1,Div(I,U))"),
        ("Mul(PY,X)", "default"),
    ]
    with pytest.raises(FidelityError, match=r"no events\.jsonl"):
        survivors_from_run(tmp_path / "nothing", 2, "cls-sigmoid")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "fcos:shapes:64:20", "--loss", "bce"], "must read CLS;REG"),
        (["--target", "faster_rcnn:shapes:64:20"], "share one classification branch"),
        (["--target", "fcos:shapes:64:20", "--no-panel", "--loss", "bce;default"], "at least 3"),
        (["--target", "fcos:shapes:60:20"], "multiple of 32"),
    ],
)
def test_bad_fidelity_requests_exit_2_with_one_line(args, message, tmp_path):
    r = CliRunner().invoke(cli, ["fidelity", "--out", str(tmp_path / "f"), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_fidelity_end_to_end_on_tiny_tasks_and_reuses_finished_trainings(tmp_path):
    out = tmp_path / "fid"
    args = [
        "fidelity",
        "--proxy",
        "fcos:shapes:64:10",
        "--target",
        "fcos:shapes:64:20",
        "--no-panel",
        "--loss",
        "default;default",
        "--loss",
        "bce;default",
        "--loss",
        "default;iou",
        "--loss",
        "default;Mul(0.1,Sub(1,Div(I,U)))",
        "--seeds",
        "1",
        "--batch-size",
        "4",
        "--backend",
        "serial",
        "--out",
        str(out),
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    result = json.loads((out / "fidelity.json").read_text())
    [row] = result["agreement"]
    assert row["n"] == 4 and -1 <= row["kendall_tau"] <= 1
    assert len(result["records"]) == 2 * 4
    assert all(r["status"] == "ok" for r in result["records"])
    assert (out / "fidelity.png").stat().st_size > 0
    assert "Kendall τ" in (out / "fidelity.md").read_text()
    cached = [p.read_text() for p in sorted(out.glob("tasks/*/evaluations.jsonl"))]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    assert [
        p.read_text() for p in sorted(out.glob("tasks/*/evaluations.jsonl"))
    ] == cached  # nothing retrained


def test_every_panel_label_shows_the_expression_it_trains():
    from autoloss.fidelity import default_panel
    from autoloss.fidelity.report import markdown

    for branch in ("cls-sigmoid", "cls-softmax"):
        panel = default_panel(branch)
        scores = {"t": {e.label: {"mean": 0.1, "aps": [0.1]} for e in panel}}
        rows = markdown(scores, [], panel, ["t"]).splitlines()
        for e in panel:
            (row,) = [r for r in rows if r.startswith(f"| {e.label} |")]
            # the full expression each entry trains, never a shortened or stale one
            assert f"{e.cls}` |" in row and f"{e.reg}` |" in row
    tanh_log = next(e for e in default_panel("cls-sigmoid") if e.label == "tanh-log-reg")
    assert "Div(U,Tanh(3))" in tanh_log.reg


def test_noise_ceiling_and_seed_bootstrap_by_hand():
    import math

    from autoloss.fidelity.ranks import noise_ceiling, tau_over_losses_and_seeds

    # two seeds that rank 4 losses identically: the target agrees with itself perfectly
    same = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.4, 0.4]]
    assert noise_ceiling(same) == 1.0
    # seed 2 reverses seed 1: the only split (seed 1 | seed 2) gives tau = -1
    reversed_ = [[0.1, 0.4], [0.2, 0.3], [0.3, 0.2], [0.4, 0.1]]
    assert noise_ceiling(reversed_) == -1.0
    assert math.isnan(noise_ceiling([[0.1], [0.2], [0.3]]))
    # resampling seeds too widens the interval when the seeds disagree
    lo, hi = tau_over_losses_and_seeds(same, reversed_, resamples=300)
    assert -1.0 <= lo < 0 < hi <= 1.0
    lo, hi = tau_over_losses_and_seeds(same, same, resamples=300)
    assert lo >= 0.0 and hi == 1.0


@pytest.mark.slow
def test_a_panel_with_a_runs_survivors_trains_on_seeds_the_run_never_used(tmp_path):
    import yaml

    from autoloss.evolution.config import budget_config
    from autoloss.fidelity.panel import panel_seeds

    run = tmp_path / "run"
    run.mkdir()
    cfg = budget_config("smoke").replace(evolution={"rungs": "1x1,2x2", "seed": 0, "final_seeds": 2})
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    lines = [{"branch": "reg", "stage": "screened", "text": "Sub(1,Div(I,U))", "mos_score": 0.9}]
    (run / "events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert panel_seeds(2) == [0, 1]
    assert panel_seeds(2, run) == [5, 6]  # the rungs used 0 and 1-2, the final 3-4
    with pytest.raises(FidelityError, match=r"no config\.yaml"):
        panel_seeds(2, tmp_path / "nothing")
    out = tmp_path / "fid"
    args = ["fidelity", "--proxy", "fcos:shapes:64:4", "--target", "fcos:shapes:64:4", "--no-panel"]
    args += ["--loss", "default;default", "--loss", "bce;default", "--from-run", str(run), "--survivors", "1"]
    args += ["--seeds", "1", "--batch-size", "2", "--backend", "serial", "--out", str(out), "--quiet"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    records = json.loads((out / "fidelity.json").read_text())["records"]
    assert len(records) == 3 * 2 and {rec["seed"] for rec in records} == {5}
