"""`autoloss transfer`: re-check losses on other detectors, datasets and longer schedules."""

from __future__ import annotations

import json
from pathlib import Path

import click

from autoloss.cli.common import (
    checked_task_name,
    fail_on_user_error,
    refuse_amp_on_cpu,
    shared_task_options,
    task_settings,
    training_options,
)
from autoloss.evolution.config import TaskConfig


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@click.command()
@click.option("--cls-loss", default=None, help="Classification loss: a name or an expression.")
@click.option("--reg-loss", default=None, help="Regression loss: a name or an expression.")
@click.option(
    "--from-run",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Take the found losses from a search's run directory (best/cls.json, best/reg.json).",
)
@click.option("--detectors", default="fcos,retinanet", show_default=True, help="Comma-separated detectors.")
@click.option(
    "--data",
    "datasets",
    default="microcontrollers",
    show_default=True,
    help="Comma-separated datasets: names (autoloss data list) and/or COCO annotation JSON files.",
)
@click.option("--seeds", type=int, default=3, show_default=True, help="Seeds per cell.")
@click.option(
    "--iterations",
    type=int,
    default=TaskConfig().iterations,
    show_default=True,
    help="Proxy length before --schedule.",
)
@click.option("--epochs", type=int, default=None, help="Proxy length in epochs instead (before --schedule).")
@click.option(
    "--schedule",
    type=float,
    default=5.0,
    show_default=True,
    help="Training length as a multiple of the proxy's.",
)
@click.option("--image-size", type=int, default=None, help="letterbox: image side [256 photos, 128 shapes].")
@click.option(
    "--named/--no-named",
    default=True,
    show_default=True,
    help="Also train every named loss of each branch (the honest baselines).",
)
@shared_task_options
@training_options("runs/transfer")
@click.option("--quiet", is_flag=True, help="No progress output; print only the results.")
@fail_on_user_error
def transfer(
    cls_loss,
    reg_loss,
    from_run,
    detectors,
    datasets,
    seeds,
    iterations,
    epochs,
    schedule,
    named,
    workers,
    backend,
    device,
    task_name,
    out,
    quiet,
    **opts,
) -> None:
    """Train each detector on each dataset with the given losses, the defaults, the published CSE-Autoloss
    losses of the matching branch and the named losses; write a table (Markdown + CSV) and a bar plot."""
    from rich.console import Console

    from autoloss.cli.live import TrainingsDisplay
    from autoloss.transfer.plan import TransferError, plan_transfer, seeds_after_run
    from autoloss.transfer.run import run_transfer
    from autoloss.transfer.table import aggregate, bar_plot, markdown, to_csv

    if schedule <= 0 or iterations < 1 or workers < 1:
        raise TransferError("--schedule, --iterations and --workers must be positive")
    first_seed = 0
    if from_run is not None:
        cls_loss = cls_loss or _best(from_run, "cls")
        reg_loss = reg_loss or _best(from_run, "reg")
        first_seed = seeds_after_run(from_run)  # never the seeds the search chose its losses on
    plan = plan_transfer(
        cls_loss, reg_loss, _split(detectors), _split(datasets), seeds, named=named, first_seed=first_seed
    )
    refuse_amp_on_cpu(opts.get("amp"), device)
    extra = task_settings(opts)  # the same task options as `autoloss search` (preset, weights, resize, ...)
    backbone = extra.pop("backbone", "tiny")
    task_name = checked_task_name(task_name)
    console = Console(stderr=True)
    if not quiet:
        console.print(
            f"transfer: {plan.trainings()} trainings ({len(plan.cells())} cells x seeds {plan.seeds}), "
            f"{schedule:g}x the proxy length",
            markup=False,
        )
    with TrainingsDisplay(console, quiet) as display:
        records = run_transfer(
            plan,
            out,
            iterations=iterations,
            epochs=epochs,
            schedule=schedule,
            device=device,
            backend=backend,
            workers=workers,
            backbone=backbone,
            progress=display.update,
            task=task_name,
            settings=extra,
        )
    rows = aggregate(records)
    out_path = Path(out)
    (out_path / "transfer.md").write_text(markdown(rows))
    (out_path / "transfer.csv").write_text(to_csv(rows))
    (out_path / "records.json").write_text(json.dumps(records, indent=1))
    bar_plot(rows, out_path / "transfer.png")
    click.echo(markdown(rows))
    click.echo(f"wrote {out_path / 'transfer.md'}, transfer.csv, transfer.png")


def _best(run_dir: str, name: str) -> str | None:
    from autoloss.errors import AutolossError

    path = Path(run_dir) / "best" / f"{name}.json"
    if not path.is_file():
        raise AutolossError(
            f"{run_dir} has no best/{name}.json: the search has not finished (autoloss resume it)"
        )
    data = json.loads(path.read_text())
    return None if data.get("expr") is None else data["text"]


COMMANDS = [transfer]
