"""`autoloss show` and `autoloss ops`: look at expressions (and draw their loss curves), list the operator
registry."""

from __future__ import annotations

import json
from typing import Any

import click

from autoloss.cli.common import BRANCH_CHOICE, fail_on_user_error


@click.command()
@click.argument("expr_or_name", nargs=-1, required=True)
@click.option(
    "--branch", type=BRANCH_CHOICE, default=None, help="Branch; inferred from the inputs if omitted."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object per loss) instead of a table.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also draw the losses' curves and gradients into FILE (.png, .pdf, .svg, ...).",
)
@click.option(
    "--vs",
    "vs",
    multiple=True,
    metavar="NAME",
    help="A named loss to draw beside them (repeatable; default: the branch's named losses; 'none').",
)
@fail_on_user_error
def show(
    expr_or_name: tuple[str, ...],
    branch: str | None,
    as_json: bool,
    plot_path: str | None,
    vs: tuple[str, ...],
) -> None:
    """Print a loss as prefix text, infix, LaTeX and simplified form, with its size and depth.

    EXPR_OR_NAME is a prefix expression such as 'Neg(Dot(Y,Log(Softmax(X))))' or a named loss
    (ce, focal, bce, iou, giou, cse-a-cls, cse-a-reg, cse-b-cls, cse-b-reg); give several to show each.

    --plot FILE draws them, all of one branch, beside the branch's named losses: the loss (top row) and
    its gradient (bottom row), computed as the detector computes them (the compiled loss, float32,
    autograd). cls-sigmoid: against the predicted probability, for a positive at IoU targets Q = 1 and
    0.5 and for a negative, times focal's alpha_t as the one-stage heads apply it. cls-softmax: against
    the true class's probability, 80 classes + background with the other logits equal, at Z = 1 and 0.5.
    reg: a 64 x 64 px target; a shifted and a scaled box against IoU, and a box moving away against the
    centre distance; the gradient is along the family's direction, per px.
    """
    from autoloss.loss import Loss

    if vs and plot_path is None:
        raise click.UsageError("--vs chooses what --plot draws beside the losses; give --plot FILE too")
    losses = [Loss.resolve(text, branch) for text in expr_or_name]
    written = None
    if plot_path is not None:
        from autoloss.report.curve_plots import plot_loss_curves

        # drawn first: a figure that cannot be drawn (mixed branches, an unknown --vs, a bad suffix) fails
        # the command before anything is printed
        written = plot_loss_curves(losses, plot_path, vs=list(vs) or None)
    infos = [_info(loss) for loss in losses]
    if as_json:
        click.echo(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
    else:
        for i, info in enumerate(infos):
            if i:
                click.echo()
            _print_table(info)
        if written is not None:
            click.echo(f"wrote {written}")


def _info(loss: Any) -> dict[str, Any]:
    return {
        "name": loss.name,
        "branch": loss.branch,
        "text": loss.text,
        "infix": loss.infix(),
        "latex": loss.latex(),
        "simplified": str(loss.simplify()),
        "size": loss.size,
        "depth": loss.depth,
        "inputs": sorted(loss.expr.inputs),
        "json": loss.to_json()["expr"],
    }


def _print_table(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("name", "branch", "text", "infix", "latex", "simplified", "size", "depth", "inputs"):
        if info[key] is not None:
            value = ", ".join(info[key]) if isinstance(info[key], list) else str(info[key])
            table.add_row(key, value)
    Console(soft_wrap=False).print(table, markup=False, highlight=False)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ops(as_json: bool) -> None:
    """List the operator registry and which branches allow each operator."""
    from autoloss.ops import OPS
    from autoloss.spaces import BRANCHES

    rows = [
        {
            "name": op.name,
            "arity": op.arity,
            "cost": op.cost,
            "doc": op.doc,
            "branches": [b.name for b in BRANCHES.values() if op.name in b.ops],
        }
        for op in OPS.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} operators")
    for col in ("name", "arity", "cost", "definition", "branches"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["arity"]), f"{r['cost']:g}", r["doc"], ", ".join(r["branches"]))
    Console().print(table, markup=False, highlight=False)


COMMANDS = [show, ops]
