"""`autoloss show` / `autoloss ops`, bad input exit codes, and the import-light package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from autoloss.cli import cli


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_show_named_loss_as_json():
    r = run("show", "cse-a-cls", "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["text"] == "Neg(Dot(Mul(Y,Add(1,Sin(Z))),Log(Softmax(X))))"
    assert info["branch"] == "cls-softmax" and info["size"] == 11 and info["depth"] == 6
    assert "sin" in info["latex"] and info["infix"].startswith("-dot(")


def test_show_prints_every_view():
    r = run("show", "Add(Sub(1,Div(I,U)),Div(Sub(E,U),E))")
    assert r.exit_code == 0, r.output
    for label in ("text", "infix", "latex", "simplified", "size", "depth"):
        assert label in r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["show", "Add(X,Foo(Y))"], "unknown operator 'Foo'"),
        (["show", "Add(X,Y"], "unbalanced parentheses"),
        (["show", "Add(X)"], "Add takes 2 arguments"),
        (["show", "W", "--branch", "reg"], "unknown input 'W' for branch reg"),
        (["show", " "], "empty expression"),
        (["show", "Log(Softmax(X))", "--branch", "cls-softmax"], "must reduce over classes"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args, message):
    r = run(*args)
    assert r.exit_code == 2
    assert message in r.output
    assert "Traceback" not in r.output


def test_ops_lists_the_registry():
    r = run("ops", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.output)
    assert len(rows) == 20
    dot = next(row for row in rows if row["name"] == "Dot")
    assert dot["branches"] == ["cls-softmax"]


def test_python_dash_m_and_import_is_light():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, autoloss; print('torch' in sys.modules, 'sympy' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False False"
    out = subprocess.run(
        [sys.executable, "-m", "autoloss", "--help"], capture_output=True, text=True, check=True
    )
    assert "show" in out.stdout and "ops" in out.stdout
