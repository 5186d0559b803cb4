"""`autoloss presets`: the named experiment configs that `train --preset` and `search --preset` start
from, one line each."""

from __future__ import annotations

import click


@click.command()
def presets() -> None:
    """List the presets: detector, backbone and weights, data, image size, schedule."""
    from autoloss.detection.presets import PROXY_PRESETS, describe_preset

    width = max(len(name) for name in PROXY_PRESETS)
    for name in PROXY_PRESETS:
        click.echo(f"{name:<{width}}  {describe_preset(name)}")


COMMANDS = [presets]
