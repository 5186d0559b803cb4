"""`autoloss show` and `autoloss ops`: look at an expression, list the operator registry."""

from __future__ import annotations

import json

import click

from autoloss.cli.common import BRANCH_CHOICE, fail_on_user_error


@click.command()
@click.argument("expr_or_name")
@click.option(
    "--branch", type=BRANCH_CHOICE, default=None, help="Branch; inferred from the inputs if omitted."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@fail_on_user_error
def show(expr_or_name: str, branch: str | None, as_json: bool) -> None:
    """Print a loss as prefix text, infix, LaTeX and simplified form, with its size and depth.

    EXPR_OR_NAME is a prefix expression such as 'Neg(Dot(Y,Log(Softmax(X))))' or a named loss
    (ce, focal, bce, iou, giou, cse-a-cls, cse-a-reg, cse-b-cls, cse-b-reg).
    """
    from autoloss.loss import Loss

    loss = Loss.resolve(expr_or_name, branch)
    info = {
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
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
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
