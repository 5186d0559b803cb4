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
    _terminate_like_interrupt()
    cli(prog_name="autoloss")


def _terminate_like_interrupt() -> None:
    """SIGTERM — what Slurm, Kubernetes and systemd send before SIGKILL — stops a command the way Ctrl-C
    does: KeyboardInterrupt in the main thread, so the run directory is left resumable, workers are shut
    down and finished trainings stay journaled. Without this, a library that installed its own handler
    (Ray does in its driver) can leave SIGTERM ignored until the grace period ends in a SIGKILL."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)
