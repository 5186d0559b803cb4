"""`autoloss export`: write found losses as PyTorch or MMDetection code, LaTeX or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from autoloss.cli.common import BRANCH_CHOICE, fail_on_user_error

FORMAT_CHOICE = click.Choice(("torch", "mmdet", "latex", "json"))


@click.command()
@click.argument("target")
@click.option(
    "--branch", type=BRANCH_CHOICE, default=None, help="Branch of an expression; inferred if omitted."
)
@click.option(
    "--format", "fmt", type=FORMAT_CHOICE, default="torch", show_default=True, help="What to write."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write here instead of stdout.",
)
@click.option(
    "--prefix",
    default="Searched",
    show_default=True,
    help="Start of the generated class names (torch, mmdet).",
)
@fail_on_user_error
def export(target: str, branch: str | None, fmt: str, out: Path | None, prefix: str) -> None:
    """Export found losses for use outside autoloss.

    TARGET is a finished run directory (exports its found cls and reg losses; a branch where the
    detector's default won exports nothing), a named loss, or a prefix expression.

    \b
    torch  one Python file needing only torch: nn.Module classes, input helpers (IoU, I/U/E, one-hot)
    mmdet  MMDetection 3.x loss classes (import without MMDetection too) and the config snippet
    latex  the formulas
    json   the expressions (Loss JSON)
    """
    from autoloss.export import export as export_text

    module = out.stem if out is not None and out.stem.isidentifier() else "autoloss_losses"
    text = export_text(target, fmt, branch=branch, prefix=prefix, module=module)
    if out is None:
        click.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}", err=True)


COMMANDS = [export]
