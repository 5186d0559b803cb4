"""`autoloss check`: run the screening filters on one loss and say which pass, why, and how fast."""

from __future__ import annotations

import json
import sys

import click

from autoloss.cli.common import BRANCH_CHOICE, fail_on_user_error


@click.command()
@click.argument("expr_or_name")
@click.option(
    "--branch", type=BRANCH_CHOICE, default=None, help="Branch; inferred from the inputs if omitted."
)
@click.option("--no-mos", is_flag=True, help="Skip model optimisation simulation (the slowest filter).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@fail_on_user_error
def check(expr_or_name: str, branch: str | None, no_mos: bool, as_json: bool) -> None:
    """Screen a loss with validity, dedup key, CPV and MOS, cheapest first.

    EXPR_OR_NAME is a prefix expression or a named loss (ce, focal, bce, iou, giou, cse-a-cls, ...).
    Exit code 0: it passes every filter; 1: a filter rejects it (the reason says which and why);
    2: the input is not a loss.
    """
    from autoloss.checks import screen
    from autoloss.loss import Loss

    loss = Loss.resolve(expr_or_name, branch)
    result = screen(loss, mos=not no_mos)
    if as_json:
        click.echo(json.dumps({"text": loss.text, "branch": loss.branch, **result.to_dict()}, indent=2))
    else:
        _print_table(loss, result)
    sys.exit(0 if result.passed else 1)


def _print_table(loss, result) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{loss.branch}: {loss.text}", title_justify="left")
    for col in ("filter", "result", "score", "ms", "reason"):
        table.add_column(col, overflow="fold")
    for v in result.verdicts:
        score = "" if v.score is None else f"{v.score:.4f}"
        table.add_row(v.name, "pass" if v.passed else "REJECT", score, f"{v.seconds * 1e3:.1f}", v.reason)
    console = Console(soft_wrap=False)
    console.print(table, markup=False, highlight=False)
    verdict = "passed every filter" if result.passed else f"rejected by {result.stage}: {result.reason}"
    console.print(
        f"{verdict} ({result.seconds * 1e3:.1f} ms); functional key {result.key}",
        markup=False,
        highlight=False,
    )


COMMANDS = [check]
