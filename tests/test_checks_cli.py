"""`autoloss check`: exit 0 when a loss passes, 1 when a filter rejects it, 2 on bad input."""

from __future__ import annotations

import json

from click.testing import CliRunner

from autoloss.cli import cli


def run(*args):
    return CliRunner().invoke(cli, ["check", *args])


def test_named_loss_passes_with_exit_0():
    r = run("giou")
    assert r.exit_code == 0, r.output
    for name in ("validity", "dedup", "cpv", "mos", "passed every filter"):
        assert name in r.output


def test_rejected_loss_exits_1_naming_filter_and_reason():
    r = run("Sub(U,I)", "--branch", "reg")
    assert r.exit_code == 1
    assert "rejected by cpv" in r.output and "not scale-free" in r.output


def test_json_output_and_no_mos():
    r = run("Neg(Dot(Y,Log(Softmax(X))))", "--no-mos", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["branch"] == "cls-softmax" and info["passed"] and info["stage"] == "passed"
    assert [v["name"] for v in info["verdicts"]] == ["validity", "dedup", "cpv"]
    r = run("Neg(Dot(Y,X))", "--json", "--no-mos")
    assert r.exit_code == 1 and json.loads(r.output)["stage"] == "cpv"


def test_bad_input_exits_2():
    for args in (["Foo(X)"], ["Add(X,Y"], ["ce", "--branch", "reg"], ["X", "--branch", "triangle"]):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "Traceback" not in r.output


def test_help_mentions_exit_codes():
    r = run("--help")
    assert r.exit_code == 0 and "Exit code 0" in r.output
