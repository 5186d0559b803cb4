"""Golden `--help` output for `autoloss` and every command, at a fixed width of 100 columns.

A change to a command's options or help text shows up here as a diff to review. To accept the current help
(after adding, changing or removing a command), regenerate the files and commit them:

    AUTOLOSS_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_cli_help.py

The files are `tests/golden/help_<command>.txt` (`help_autoloss.txt` for the group itself).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoloss.cli import cli

GOLDEN = Path(__file__).parent / "golden"
WIDTH = 100
UPDATE = os.environ.get("AUTOLOSS_UPDATE_GOLDEN") == "1"
COMMANDS = sorted(cli.commands)


def render_help(*args: str) -> str:
    # Click builds a command's help option once and keeps it (`_help_option`). A test that invoked a
    # command on its own, outside the group and its -h/--help names, leaves a "--help"-only option behind
    # in this process; whether that happened depends on which tests share an xdist worker. Start afresh.
    for command in (cli, *cli.commands.values()):
        command._help_option = None
    result = CliRunner().invoke(
        cli, [*args, "--help"], prog_name="autoloss", terminal_width=WIDTH, env={"COLUMNS": str(WIDTH)}
    )
    assert result.exit_code == 0, result.output
    return result.output


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"help_{name}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden help for {name!r}: run AUTOLOSS_UPDATE_GOLDEN=1 pytest {__file__}"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (
        f"`autoloss {name} --help` changed; review the diff and, if intended, regenerate with "
        "AUTOLOSS_UPDATE_GOLDEN=1 pytest tests/test_cli_help.py"
    )


def test_group_help():
    check_golden("autoloss", render_help())


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command):
    check_golden(command, render_help(command))


def test_every_golden_file_belongs_to_a_command():
    if UPDATE:
        for path in GOLDEN.glob("help_*.txt"):
            if path.stem.removeprefix("help_") not in {*COMMANDS, "autoloss"}:
                path.unlink()
    names = {p.stem.removeprefix("help_") for p in GOLDEN.glob("help_*.txt")}
    assert names == {*COMMANDS, "autoloss"}, (
        "stale or missing golden files: regenerate them (see the docstring)"
    )
