"""`autoloss search` and `autoloss resume`: run the CSE-Autoloss search with a live display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from autoloss.cli.common import (
    fail_on_user_error,
    refuse_amp_on_cpu,
    task_option,
    task_settings,
    training_settings,
)


def tensorboard_option(fn: Any) -> Any:
    return click.option(
        "--tensorboard/--no-tensorboard",
        default=None,
        help="Write TensorBoard event files to RUN/tensorboard [on where the tensorboard extra is "
        "installed].",
    )(fn)


def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be positive, got {value}")
    return value


@click.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A YAML file in the run directory's config.yaml schema; flags given here override it.",
)
@task_option
@click.option(
    "--preset",
    default=None,
    help="The proxy training to start from (autoloss presets) [fcos-shapes]; e.g. fcos-r50-coco on a GPU.",
)
@click.option(
    "--detector",
    type=click.Choice(["fcos", "retinanet", "faster_rcnn"]),
    default=None,
    help="Proxy detector [fcos].",
)
@click.option(
    "--backbone",
    type=click.Choice(["tiny", "resnet18", "resnet50"]),
    default=None,
    help="Proxy backbone [tiny].",
)
@click.option(
    "--data",
    default=None,
    help="A dataset name (autoloss data list) or a COCO annotations JSON; a single proxy task instead of "
    "the default's two [fcos:bccd:128:300 and fcos:thermal:128:300].",
)
@click.option("--images", default=None, help="Image folder for --data JSON [the JSON's folder].")
@click.option(
    "--proxy-task",
    "proxy_tasks",
    multiple=True,
    help="A proxy task DETECTOR:DATA:SIZE:ITERATIONS, e.g. fcos:bccd:128:300 (repeatable): fitness is the "
    "mean over tasks of AP relative to the default loss's on that task.",
)
@training_settings
@click.option("--image-size", type=int, default=None, help="letterbox: image side [128 shapes, 256 COCO].")
@click.option(
    "--branch",
    type=click.Choice(["cls", "reg", "both"]),
    default=None,
    help="Which loss to search; the other stays at the detector's default [both].",
)
@click.option("--generations", type=int, default=None, callback=_positive, help="Generations per branch [2].")
@click.option(
    "--offspring",
    type=int,
    default=None,
    callback=_positive,
    help="Candidates generated per generation [10000].",
)
@click.option(
    "--top-k",
    type=int,
    default=None,
    callback=_positive,
    help="Best MOS scores per generation that get a proxy training [2].",
)
@click.option(
    "--survivor-pool",
    type=click.IntRange(min=0),
    default=None,
    help="Filter survivors not picked wait for later generations in a pool of this many per branch, the "
    "best by MOS score kept [0: none].",
)
@click.option("--parents", type=int, default=None, callback=_positive, help="Parents per generation [4].")
@click.option(
    "--rungs",
    default=None,
    help="Multi-fidelity rungs, MULTIPLIERxSEEDS each: 1x1,2x2 = the proxy length on 1 seed, then 2x "
    "the length on 2 new seeds for the promoted [1x1,2x2].",
)
@click.option(
    "--promote",
    type=float,
    default=None,
    help="Fraction of the candidates trained at a rung that move up to the next [0.34].",
)
@click.option(
    "--proxy-iterations",
    type=int,
    default=None,
    callback=_positive,
    help="Proxy training length in iterations [300].",
)
@click.option(
    "--proxy-epochs",
    type=int,
    default=None,
    callback=_positive,
    help="Proxy training length in epochs (instead of iterations).",
)
@click.option(
    "--budget",
    type=click.Choice(["default", "long", "smoke"]),
    default="default",
    show_default=True,
    help="A named budget; the flags above override it. default: about 30 minutes on 2 cores; long: about "
    "4x its trainings (2 hours); smoke: about a minute.",
)
@click.option(
    "--max-proxy-evals",
    type=int,
    default=None,
    callback=_positive,
    help="At most this many proxy-length trainings in all, the final included (a 3x training counts 3).",
)
@click.option(
    "--time-limit", type=float, default=None, callback=_positive, help="Stop after this many seconds."
)
@click.option(
    "--final-seeds",
    type=int,
    default=None,
    callback=_positive,
    help="Held-out seeds (no rung uses them) the final comparison re-trains on; under 5 the verdict says "
    "too few [5].",
)
@click.option(
    "--backend",
    type=click.Choice(["serial", "process", "ray"]),
    default=None,
    help="Where the work runs [process].",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    callback=_positive,
    help="Proxy trainings at once [2 = the cores here].",
)
@click.option(
    "--ray-address", default=None, help="Ray cluster address (auto | HOST:PORT); with --backend ray."
)
@click.option(
    "--gpus-per-trial",
    type=float,
    default=None,
    help="Ray: GPUs per proxy training; 0.5 puts two on a GPU [1 on cuda].",
)
@click.option(
    "--cpus-per-trial", type=float, default=None, help="CPUs (torch threads) per proxy training [1]."
)
@click.option(
    "--workers-per-gpu",
    type=int,
    default=None,
    callback=_positive,
    help="Process backend on cuda: workers sharing each visible GPU [1].",
)
@click.option(
    "--trial-timeout",
    type=float,
    default=None,
    callback=_positive,
    help="Stop a proxy training after this many seconds (retried once, then recorded as failed).",
)
@click.option("--seed", type=int, default=None, help="Search seed: the same seed gives the same search [0].")
@click.option("--device", default=None, help="cpu or cuda [cpu].")
@click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Run directory [runs/search-<date>-<time>]."
)
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--no-cpv", is_flag=True, help="Ablation: skip convergence property verification.")
@click.option("--no-mos", is_flag=True, help="Ablation: skip model optimization simulation.")
@click.option("--quiet", is_flag=True, help="No live display; print only the final table.")
@tensorboard_option
@fail_on_user_error
def search(**opts: Any) -> None:
    """Search for better detection losses (CSE-Autoloss) and report them against the defaults."""
    from autoloss.evolution.api import preflight, run_search
    from autoloss.evolution.config import budget_config, load_config_file

    cfg = budget_config(opts["budget"])
    if opts["config_file"]:
        cfg = load_config_file(opts["config_file"], cfg)
    evolution = {
        k: opts[k]
        for k in (
            "branch",
            "generations",
            "offspring",
            "top_k",
            "survivor_pool",
            "parents",
            "seed",
            "max_proxy_evals",
            "final_seeds",
            "rungs",
            "promote",
        )
        if opts[k] is not None
    }
    if opts["time_limit"] is not None:
        evolution["time_limit_s"] = opts["time_limit"]
    task: dict[str, Any] = {"settings": task_settings(opts)}
    if opts["proxy_tasks"]:
        task["proxy_tasks"] = list(opts["proxy_tasks"])
    if opts["task_name"] is not None:
        task["name"] = opts["task_name"]
    if opts["device"] is not None:
        task["device"] = opts["device"]
    if opts["proxy_iterations"] is not None:
        task.update(iterations=opts["proxy_iterations"], epochs=None)
    if opts["proxy_epochs"] is not None:
        task.update(epochs=opts["proxy_epochs"], iterations=None)
    backend = {
        k: opts[k]
        for k in ("backend", "workers", "ray_address", "gpus_per_trial", "cpus_per_trial", "workers_per_gpu")
        if opts[k] is not None
    }
    if opts["trial_timeout"] is not None:
        backend["trial_timeout_s"] = opts["trial_timeout"]
    filters = {"cpv": not opts["no_cpv"], "mos": not opts["no_mos"]}
    cfg = cfg.replace(evolution=evolution, task=task, backend=backend, filters=filters)
    refuse_amp_on_cpu(opts["amp"], cfg.task.device)
    if cfg.task.proxy_tasks:
        given = [f for f, k in (("--image-size", "image_size"), ("--proxy-iterations", "proxy_iterations"),
                                ("--proxy-epochs", "proxy_epochs")) if opts[k] is not None]  # fmt: skip
        if given:
            from autoloss.evolution.config import ConfigError

            raise ConfigError(
                f"{', '.join(given)} set one task's size or length; the search trains the proxy tasks "
                f"{', '.join(cfg.task.proxy_tasks)}: give SIZE and ITERATIONS in --proxy-task "
                "DETECTOR:DATA:SIZE:ITERATIONS (or --data for a single task)"
            )
    preflight(cfg)  # before the live display: a refusal is one line
    _run(
        lambda progress: run_search(cfg, opts["out"], overwrite=opts["overwrite"], progress=progress),
        cfg,
        opts["quiet"],
        opts["tensorboard"],
    )


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--backend", type=click.Choice(["serial", "process", "ray"]), default=None)
@click.option("--workers", type=int, default=None, callback=_positive)
@click.option("--ray-address", default=None)
@click.option("--device", default=None)
@click.option("--quiet", is_flag=True, help="No live display.")
@click.option(
    "--allow-changed-data",
    is_flag=True,
    help="Resume although the data files changed since the run started (recorded in inputs.json).",
)
@tensorboard_option
@fail_on_user_error
def resume(
    run_dir: str, backend, workers, ray_address, device, quiet, allow_changed_data, tensorboard
) -> None:
    """Continue a search that stopped or was killed; finished trainings are never recomputed.

    Only how the work runs may change (--backend, --workers, --ray-address, --device).
    """
    from autoloss.evolution.api import resume_search
    from autoloss.evolution.config import SearchConfig
    from autoloss.runs.rundir import RunDir

    overrides = {
        "backend": {
            k: v
            for k, v in (("backend", backend), ("workers", workers), ("ray_address", ray_address))
            if v is not None
        },
        "task": {"device": device} if device else {},
    }
    cfg = SearchConfig.from_dict(RunDir.open(run_dir).config())
    _run(
        lambda progress: resume_search(
            run_dir, overrides, progress=progress, allow_changed_data=allow_changed_data
        ),
        cfg,
        quiet,
        tensorboard,
    )


def _board(wanted: bool | None, console: Any, quiet: bool) -> Any:
    """The TensorBoard writer of the run (report/tensorboard.py), or None: --tensorboard insists (an error
    naming the extra if it is missing), --no-tensorboard declines, and by default a run gets one where the
    extra is installed and a note where it is not: a search must not fail for its charts."""
    if wanted is False:
        return None
    from autoloss.report.tensorboard import SearchBoard, TensorBoardMissing

    try:
        return SearchBoard()
    except TensorBoardMissing as exc:
        if wanted:
            raise
        if not quiet:
            console.print(f"note: no TensorBoard files for this run. {exc}", markup=False, highlight=False)
        return None


def _run(start, cfg, quiet: bool, tensorboard: bool | None = None) -> None:
    import sys

    from rich.console import Console

    from autoloss.cli.live import LiveDisplay
    from autoloss.evolution.proxy import ProxyBroken

    console = Console(stderr=True)
    board = _board(tensorboard, console, quiet)
    display = LiveDisplay(cfg, console, enabled=not quiet)

    def progress(event: dict[str, Any]) -> None:
        display.update(event)
        if board is not None:
            board(event)

    try:
        with display:
            summary, run = start(progress)
    except ProxyBroken as exc:
        # Not a usage error (exit 2): the run started and its proxy does not train. Exit 1, like a failed
        # `autoloss train`, with what went wrong; the finished trainings are in the run directory.
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    finally:
        if board is not None:
            board.close()
    _print_summary(summary, Path(run.path), tensorboard=board is not None and board.stopped is None)


def _print_summary(summary: dict[str, Any], path: Path, tensorboard: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    from autoloss.evolution.outputs import (
        ALPHA_NOTE,
        best_named_verdict,
        final_heading,
        fmt_row,
        gain_cells,
        per_task_lines,
        split_lines,
        value_heading,
    )
    from autoloss.spaces.named import label as short

    console = Console()
    if not summary:
        console.print(f"No final table (the search stopped before it). Run directory: {path}")
        return
    table = Table(title=final_heading(summary))
    for col in ("losses", "cls", "reg", value_heading(summary), "gain vs default [95 % CI]", "verdict"):
        table.add_column(col, overflow="fold")
    for label, row in summary["table"].items():
        table.add_row(
            label,
            short(row["cls"]),
            short(row["reg"]),
            fmt_row(row),
            *gain_cells(row.get("vs_default")),
        )
    console.print(table, markup=False, highlight=False)
    for line in [*per_task_lines(summary["table"]), *split_lines(summary.get("splits") or {}), ""]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    for line in (summary.get("verdict"), best_named_verdict(summary), ALPHA_NOTE):
        if line:
            console.print(line, markup=False)
    if summary.get("stopped"):
        console.print(f"Generations stopped early: {summary['stopped']}", markup=False)
    console.print(f"Run directory: {path}  (hall_of_fame.csv, best/, events.jsonl)", markup=False)
    console.print(f"Report: autoloss report {path}", markup=False)
    if tensorboard:
        console.print(f"TensorBoard: tensorboard --logdir {path / 'tensorboard'}", markup=False)


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--top", type=int, default=5, show_default=True, help="Losses per branch in the report.")
@fail_on_user_error
def report(run_dir: str, top: int) -> None:
    """Write report.md with plots (mAP per generation, funnel, time per stage) into RUN_DIR."""
    from autoloss.report import write_report

    click.echo(f"wrote {write_report(run_dir, top=top)}")


COMMANDS = [search, resume, report]
