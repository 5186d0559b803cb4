"""Screening throughput (validity + CPV, and MOS) at 1 and 2 processes, and the funnel on random trees.

    .venv/bin/python bench/screening.py [--trees 10000] [--seed 0] [--rounds 2] [--mos-candidates 120]
        [--mos-chunk 20] [--no-early-stop] [--write]

1. Rejection counts per filter per branch on `--trees` random trees per branch (the search's own generator:
   ramped half-and-half, depth <= 6), every filter on.
2. Candidates per second through validity + CPV on random trees (parse and compile included, as a search
   worker does it), and through MOS on candidates that reach it (CPV survivors and the named losses),
   with a pool of 1 and of 2 worker processes, interleaved round by round so machine noise hits both.
   MOS candidates go to the workers `--mos-chunk` texts per call, as the search sends them: the survivors
   of one call are simulated as one batch. `--no-early-stop` turns MOS early stopping off.
3. The MOS scores of the named losses.

`--write` appends the tables, with machine and date, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import random
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from autoloss.checks import CheckConfig, screen_texts
from autoloss.checks.mos import simulate
from autoloss.loss import Loss
from autoloss.spaces.branches import BRANCHES
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half
from autoloss.spaces.named import DEFAULTS, NAMED

ROOT = Path(__file__).resolve().parent.parent


def _init_worker() -> None:
    torch.set_num_threads(1)  # one core per worker: parallelism comes from the processes


def _warm(branch: str) -> int:
    # Builds the probe grids, the MOS data and the baseline score in the worker before timing starts.
    screen_texts([Loss.named(DEFAULTS[branch]).text], branch)
    return os.getpid()


def run_pool(
    pool: ProcessPoolExecutor,
    texts: list[str],
    branch: str,
    chunk: int,
    mos: bool,
    config: dict | None = None,
) -> list[dict]:
    futures = [
        pool.submit(screen_texts, texts[i : i + chunk], branch, config, True, mos)
        for i in range(0, len(texts), chunk)
    ]
    out: list[dict] = []
    for f in futures:
        out.extend(f.result())
    return out


def compile_only(texts: list[str], branch: str) -> int:
    """The reference workload: parse and compile each text, nothing else (the prototype measured 5k-14k/s)."""
    for text in texts:
        _ = Loss.parse(text, branch).fn
    return len(texts)


def run_reference(pool: ProcessPoolExecutor, texts: list[str], branch: str, chunk: int) -> None:
    for f in [pool.submit(compile_only, texts[i : i + chunk], branch) for i in range(0, len(texts), chunk)]:
        f.result()


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def trees(branch: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [t.text for t in ramped_half_and_half(BRANCHES[branch], rng, count, TreeLimits(max_depth=6))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trees", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mos-candidates", type=int, default=120)
    parser.add_argument("--mos-chunk", type=int, default=20, help="texts per worker call in the MOS rate")
    parser.add_argument("--no-early-stop", action="store_true", help="MOS without early stopping")
    parser.add_argument("--write", action="store_true", help="append the results to BENCHMARKS.md")
    args = parser.parse_args()
    mos_config = {"mos": {"stop_checkpoints": []}} if args.no_early_stop else None
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    ctx = get_context("spawn")
    pools = {p: ProcessPoolExecutor(p, mp_context=ctx, initializer=_init_worker) for p in (1, 2)}
    lines: list[str] = []

    # --- 1. The funnel on random trees ----------------------------------------------------------------
    lines += [
        f"Rejections on {args.trees:,} random trees per branch (ramped half-and-half, depth <= 6, "
        f"seed {args.seed}), every filter on:",
        "",
        "| branch | validity | CPV | MOS | passed | rejected | seconds (2 processes) |",
        "|---|---|---|---|---|---|---|",
    ]
    reach_mos: dict[str, list[str]] = {}
    for branch in BRANCHES:
        texts = trees(branch, args.trees, args.seed)
        for p in pools.values():
            list(p.map(_warm, [branch] * 8))
        start = time.perf_counter()
        results = run_pool(pools[2], texts, branch, 250, mos=True)
        seconds = time.perf_counter() - start
        stages = Counter(r["stage"] for r in results)
        reach_mos[branch] = [r["text"] for r in results if r["stage"] in ("mos", "passed")]
        rejected = 1 - stages["passed"] / len(texts)
        counts = [f"{stages[k]:,}" for k in ("validity", "cpv", "mos", "passed")]
        lines.append(row(branch, *counts, f"{rejected:.2%}", f"{seconds:.1f}"))
        reasons = Counter(r["reason"].split(":")[0][:48] for r in results if not r["passed"])
        print(branch, dict(stages), reasons.most_common(6), flush=True)
    lines.append("")

    # --- 2. Throughput, 1 vs 2 processes, interleaved ---------------------------------------------------
    cpv_texts = [t for b in BRANCHES for t in trees(b, 2000, args.seed + 1)]
    cpv_branches = [b for b in BRANCHES for _ in range(2000)]
    mos_pool = {b: (reach_mos[b] + [n.text for n in NAMED.values() if n.branch == b]) for b in BRANCHES}
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for procs, pool in pools.items():
            start = time.perf_counter()
            for branch in BRANCHES:
                texts = [t for t, b in zip(cpv_texts, cpv_branches, strict=True) if b == branch]
                run_pool(pool, texts, branch, 250, mos=False)
            rates.setdefault(("cpv", procs), []).append(len(cpv_texts) / (time.perf_counter() - start))
            start = time.perf_counter()
            for branch in BRANCHES:
                texts = [t for t, b in zip(cpv_texts, cpv_branches, strict=True) if b == branch]
                run_reference(pool, texts, branch, 250)
            rates.setdefault(("ref", procs), []).append(len(cpv_texts) / (time.perf_counter() - start))
            start = time.perf_counter()
            n = 0
            for branch in BRANCHES:
                base = mos_pool[branch]
                texts = [base[i % len(base)] for i in range(args.mos_candidates // 3)]
                n += len(texts)
                run_pool(pool, texts, branch, args.mos_chunk, mos=True, config=mos_config)
            rates.setdefault(("mos", procs), []).append(n / (time.perf_counter() - start))
    for pool in pools.values():
        pool.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    cpv1, cpv2, mos1, mos2 = (med[k] for k in (("cpv", 1), ("cpv", 2), ("mos", 1), ("mos", 2)))
    lines += [
        f"Candidates per second (median of {args.rounds} interleaved rounds; one thread per worker):",
        "",
        row("stage", "1 process", "2 processes", "speed-up", "target (2 processes)"),
        row(*["---"] * 5),
        row(
            "reference: parse + compile only, same trees",
            f"{med[('ref', 1)]:,.0f}",
            f"{med[('ref', 2)]:,.0f}",
            f"{med[('ref', 2)] / med[('ref', 1)]:.2f}",
            "",
        ),
        row(
            "validity + dedup + CPV, random trees (3 x 2,000)",
            f"{cpv1:,.0f}",
            f"{cpv2:,.0f}",
            f"{cpv2 / cpv1:.2f}",
            f">= 10,000 and >= 0.5x the reference ({cpv2 / med[('ref', 2)]:.2f}x) — "
            f"{'met' if cpv2 >= 10_000 and cpv2 >= 0.5 * med[('ref', 2)] else 'missed'}",
        ),
        row(
            f"validity + dedup + CPV + MOS, {args.mos_candidates} candidates that reach MOS "
            f"({args.mos_chunk} per call{', no early stop' if args.no_early_stop else ''})",
            f"{mos1:,.1f}",
            f"{mos2:,.1f}",
            f"{mos2 / mos1:.2f}",
            f">= 200 — {'met' if mos2 >= 200 else 'missed'}",
        ),
        "",
    ]

    # --- 3. MOS scores of the named losses ------------------------------------------------------------
    config = CheckConfig()
    lines += [
        "MOS scores of the named losses (default config, seed 0):",
        "",
        "| loss | branch | score | x baseline |",
    ]
    lines.append("|---|---|---|---|")
    base = {b: simulate(Loss.named(n), config.mos)[0] for b, n in DEFAULTS.items()}
    for name, entry in NAMED.items():
        score, _ = simulate(Loss.named(name), config.mos)
        lines.append(f"| {name} | {entry.branch} | {score:.4f} | {score / base[entry.branch]:.3f} |")
    lines += [
        "",
        f"Load average (1 min): {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
        "(other jobs share the machine: rates scale with the free cores).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        machine = f"{os.cpu_count()}-core {platform.machine()} VM, torch {torch.__version__} (CPU)"
        header = (
            "\n## Screening: the funnel on random trees and filter throughput (`bench/screening.py`)\n\n"
            f"Command: `.venv/bin/python bench/screening.py --write`. Machine: {machine}. "
            f"Date: {datetime.date.today().isoformat()}.\n\n"
        )
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(header + text + "\n")


if __name__ == "__main__":
    main()
