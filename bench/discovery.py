"""Does the search find better losses? A default search on `shapes`, then the found losses transferred to
real data (microcontrollers, BCCD), to the other one-stage detector (RetinaNet) and to a longer schedule,
against the defaults, the published CSE-Autoloss losses and every named loss of the branch.

    .venv/bin/python bench/discovery.py                       # search (~15 min) + transfer
    .venv/bin/python bench/discovery.py --run runs/NAME       # transfer the losses of a finished search

Claims need: the found loss beats the *best* named loss beyond seed noise on `shapes` at `--schedule`
times the proxy length, and keeps a gain on at least one real dataset and one other detector.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autoloss.evolution.api import run_search
from autoloss.evolution.config import TaskConfig, budget_config
from autoloss.transfer.plan import plan_transfer
from autoloss.transfer.run import run_transfer
from autoloss.transfer.table import aggregate, bar_plot, markdown, to_csv
from machine import describe as describe_machine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", default=None, help="a finished search's run directory (skip the search)")
    parser.add_argument("--out", default="runs/discovery")
    parser.add_argument("--detectors", nargs="+", default=["fcos", "retinanet"])
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=[
            "shapes",
            str(SHARED / "microcontrollers/annotations.coco.json"),
            str(SHARED / "bccd/annotations.coco.json"),
        ],
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--schedule", type=float, default=5.0)
    parser.add_argument(
        "--iterations",
        type=int,
        default=TaskConfig().iterations,
        help="the proxy length the schedule multiplies",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-named", action="store_true", help="skip the named-loss baselines")
    args = parser.parse_args()

    out = Path(args.out)
    t0 = time.time()
    run_dir = Path(args.run) if args.run else out / "search"
    if args.run is None and not (run_dir / "summary.json").is_file():
        run_search(budget_config("default"), run_dir, overwrite=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    found = summary["table"]["found"]
    print(
        f"search: {run_dir} found cls={found['cls']} reg={found['reg']} ({time.time() - t0:.0f} s)",
        flush=True,
    )

    plan = plan_transfer(
        found["cls"], found["reg"], args.detectors, args.datasets, args.seeds, named=not args.no_named
    )
    print(
        f"transfer: {plan.trainings()} trainings at {args.schedule:g}x {args.iterations} iterations",
        flush=True,
    )
    records = run_transfer(
        plan, out / "transfer", iterations=args.iterations, schedule=args.schedule, workers=args.workers
    )
    rows = aggregate(records)
    (out / "discovery.md").write_text(markdown(rows))
    (out / "discovery.csv").write_text(to_csv(rows))
    bar_plot(rows, out / "discovery.png")
    print(f"\nmachine: {describe_machine()}, {args.workers} workers; {time.time() - t0:.0f} s in all")
    print(markdown(rows))
    for detector, data in plan.cells():
        cell = [r for r in rows if r["detector"] == detector and r["data"] == data]
        best_named = max((r for r in cell if r["label"] not in ("found",)), key=lambda r: r["AP_mean"])
        found_row = next((r for r in cell if r["label"] == "found"), None)
        if found_row is not None:
            margin = found_row["AP_mean"] - best_named["AP_mean"]
            where = Path(data).parent.name if data != "shapes" else "shapes"
            other = f"best other ({best_named['label']}) {best_named['AP_mean']:.4f}"
            print(f"{detector} on {where}: found {found_row['AP_mean']:.4f} vs {other}: {margin:+.4f}")


if __name__ == "__main__":
    main()
