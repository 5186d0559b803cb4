"""`autoloss search` (placeholder until the search lands)."""

from __future__ import annotations

import sys

import click


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
def search() -> None:
    """Run a CSE-Autoloss search (not built yet)."""
    click.echo("autoloss search is not built yet (issue [4/7]); try `autoloss show cse-a-cls`.", err=True)
    sys.exit(1)


COMMANDS = [search]
