"""The found pair of a search, trained on a held-out dataset (one no search or choice used) against the
default and the best named pair: trained on its train split, AP on its test split, paired over seeds.

    .venv/bin/python bench/heldout_check.py RUN_DIR DATA.json [--seeds 5] [--size 256] [--iterations 1500]

Seeds run seed-major (every pair on seed 0, then on seed 1, ...) so that an interrupted check still holds
complete pairs; trainings are cached under --out (the transfer cell cache: data content + settings), so a
re-run trains only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from autoloss.evolution.fitness import ap_of
from autoloss.evolution.proxy import ProxyRunner
from autoloss.executors import make_executor
from autoloss.runs.cell_cache import cell_folder, identity
from autoloss.runs.rundir import RunDir
from autoloss.stats import describe_gain, paired_comparison
from autoloss.transfer.run import cell_config

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autoloss" / "heldout-check"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path)
    parser.add_argument("data")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=CACHE)
    args = parser.parse_args()
    table = json.loads((args.run / "summary.json").read_text())["table"]
    pairs = {"default": ("default", "default"), "found": (table["found"]["cls"], table["found"]["reg"])}
    if "best named" in table:
        pairs["best named"] = (table["best named"]["cls"], table["best named"]["reg"])
    cfg = cell_config("fcos", args.data, args.iterations, None, "cpu", "tiny", args.size)
    folder = cell_folder(
        args.out / "cells", f"fcos-{Path(args.data).parent.name}-tiny-{args.iterations}it", identity(cfg)
    )
    executor = make_executor("process", args.workers)
    try:
        runner = ProxyRunner(cfg, RunDir(folder), executor.submit, executor.slots)
        seeds = list(range(args.seeds))
        jobs = [(c, r, s) for s in seeds for c, r in pairs.values()]
        results = runner.evaluate(jobs, split="test")
    finally:
        executor.shutdown()
    aps = {label: [] for label in pairs}
    for (c, r, _), res in zip(jobs, results, strict=True):
        label = next(k for k, v in pairs.items() if v == (c, r))
        aps[label].append(ap_of(res))
    lines = [
        f"{args.data}: FCOS-tiny, {args.size} px, {args.iterations} iterations, seeds {seeds}, AP on test",
        "",
    ]
    for label, values in aps.items():
        lines.append(
            f"- {label}: {statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f} per seed "
            + ", ".join(f"{v:.4f}" for v in values)
        )
    for label in ("found", "best named"):
        if label in aps:
            lines.append(
                f"- {label} vs default: {describe_gain(paired_comparison(aps[label], aps['default']))}"
            )
    if "best named" in aps:
        lines.append(
            f"- found vs best named: {describe_gain(paired_comparison(aps['found'], aps['best named']))}"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
