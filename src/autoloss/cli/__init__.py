"""The `autoloss` command line: a thin click group over the library.

Each command lives in its own module and imports heavy libraries (torch, sympy) inside the
command function, so `autoloss --help` starts fast and importing the package starts nothing.
"""

from __future__ import annotations

import click

from autoloss.cli import (
    check_cmd,
    data_cmd,
    export_cmd,
    fidelity_cmd,
    presets_cmd,
    search_cmd,
    show_cmd,
    train_cmd,
    transfer_cmd,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="autoloss")
def cli() -> None:
    """Discover loss functions for object detectors (CSE-Autoloss)."""


for _module in (
    show_cmd,
    check_cmd,
    train_cmd,
    search_cmd,
    transfer_cmd,
    fidelity_cmd,
    export_cmd,
    presets_cmd,
    data_cmd,
):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli(prog_name="autoloss")
