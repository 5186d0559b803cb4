"""`autoloss fidelity`: does a proxy rank losses the way a target training does?"""

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

DEFAULT_PROXY = "fcos:bccd:128:300"


@click.command()
@click.option(
    "--proxy",
    "proxies",
    multiple=True,
    help=f"A proxy task DETECTOR:DATA:SIZE:ITERATIONS (repeatable; SIZE may be 'native') [{DEFAULT_PROXY}].",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    required=True,
    help="A target task, same form: e.g. fcos:data/val.json:native:1500 or a longer schedule (repeatable).",
)
@click.option(
    "--from-run",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Add filter survivors of this search's run directory to the panel (best MOS scores first); the "
    "panel then trains on seeds above every seed that run used.",
)
@click.option(
    "--survivors", type=int, default=4, show_default=True, help="How many survivors --from-run adds."
)
@click.option(
    "--loss",
    "losses",
    multiple=True,
    help="Add a pair CLS;REG to the panel (names or expressions; 'default' for the stock loss). Repeatable.",
)
@click.option(
    "--panel/--no-panel",
    default=True,
    show_default=True,
    help="Include the built-in panel: defaults, named and published losses, hand-made variants.",
)
@click.option("--seeds", type=int, default=2, show_default=True, help="Seeds per loss and task.")
@shared_task_options
@training_options("runs/fidelity")
@click.option("--quiet", is_flag=True, help="No progress output; print only the results.")
@fail_on_user_error
def fidelity(
    proxies,
    targets,
    from_run,
    survivors,
    losses,
    panel,
    seeds,
    workers,
    backend,
    device,
    task_name,
    out,
    quiet,
    **opts,
) -> None:
    """Train a panel of losses on a proxy and on target tasks; report Kendall τ and Spearman ρ (bootstrap
    95 % CIs), top-1 / top-3 agreement, a table (fidelity.md) and a scatter plot (fidelity.png)."""
    from rich.console import Console

    from autoloss.cli.live import TrainingsDisplay
    from autoloss.fidelity import parse_task, train_panel
    from autoloss.fidelity.panel import PanelEntry, default_panel, panel_seeds, survivors_from_run, unique
    from autoloss.fidelity.report import agreement_rows, markdown, scatter_plot, scores_by_task
    from autoloss.fidelity.tasks import FidelityError
    from autoloss.loss import Loss
    from autoloss.spaces.branches import DETECTOR_CLS_BRANCH as DETECTOR_BRANCH

    if seeds < 1 or workers < 1 or survivors < 0:
        raise FidelityError("--seeds and --workers must be positive, --survivors at least 0")
    task_name = checked_task_name(task_name)
    refuse_amp_on_cpu(opts.get("amp"), device)
    extra = task_settings(opts)  # the same task options as `autoloss search` (preset, weights, resize, ...)
    backbone = extra.pop("backbone", "tiny")
    proxy_tasks = [parse_task(t, backbone, task_name, extra=extra) for t in (proxies or (DEFAULT_PROXY,))]
    # Targets report AP on their test split: images no selection (and no proxy) was scored on.
    target_tasks = [parse_task(t, backbone, task_name, "test", extra) for t in targets]
    branches = {DETECTOR_BRANCH[t.detector] for t in [*proxy_tasks, *target_tasks]}
    if len(branches) > 1:
        raise FidelityError(
            "every task must share one classification branch (one-stage fcos/retinanet take cls-sigmoid, "
            "faster_rcnn cls-softmax): one panel cannot train on both"
        )
    (cls_branch,) = branches
    entries = default_panel(cls_branch) if panel else []
    if from_run is not None:
        entries += survivors_from_run(from_run, survivors, cls_branch)
    seed_list = panel_seeds(seeds, from_run)
    for i, pair in enumerate(losses):
        cls_text, sep, reg_text = pair.partition(";")
        if not sep:
            raise FidelityError(f"--loss {pair!r} must read CLS;REG, e.g. 'bce;giou' or 'default;iou'")
        cls_text, reg_text = cls_text.strip(), reg_text.strip()
        c = "default" if cls_text == "default" else Loss.resolve(cls_text, cls_branch).text
        r = "default" if reg_text == "default" else Loss.resolve(reg_text, "reg").text
        entries.append(PanelEntry(f"given-{i + 1}", c, r))
    entries = unique(entries)
    if len(entries) < 3:
        raise FidelityError(f"the panel has {len(entries)} loss pairs; rank agreement needs at least 3")
    console = Console(stderr=True)
    tasks = [*proxy_tasks, *target_tasks]
    if not quiet:
        console.print(
            f"fidelity: {len(entries)} loss pairs x {len(tasks)} tasks x {seeds} seeds = "
            f"{len(entries) * len(tasks) * seeds} trainings",
            markup=False,
        )
    with TrainingsDisplay(console, quiet) as display:
        records = train_panel(
            tasks,
            [(e.cls, e.reg) for e in entries],
            seed_list,
            out,
            device=device,
            backend=backend,
            workers=workers,
            progress=display.update,
        )
    scores = scores_by_task(records, entries)
    rows = agreement_rows(scores, [t.name for t in proxy_tasks], [t.name for t in target_tasks])
    out_path = Path(out)
    text = markdown(scores, rows, entries, [t.name for t in tasks])
    (out_path / "fidelity.md").write_text(text)
    (out_path / "fidelity.json").write_text(
        json.dumps({"scores": scores, "agreement": rows, "records": records}, indent=1) + "\n"
    )
    scatter_plot(scores, rows, out_path / "fidelity.png")
    click.echo(text)
    click.echo(f"wrote {out_path / 'fidelity.md'}, fidelity.json, fidelity.png")


COMMANDS = [fidelity]
