"""Scaling benchmark: proxy trainings per minute and screened candidates per second, by backend.

    .venv/bin/python bench/scaling.py                       # about 12 minutes on 2 cores
    .venv/bin/python bench/scaling.py --iterations 100 --trainings 2 --rounds 4

Proxy: the fcos-shapes preset shortened to `--iterations`, seeds all different, with 1 and 2 process
workers and with Ray (a private loopback cluster, 2 workers). Screening: random cls-sigmoid trees through
`screen_task` (validity, key, CPV, MOS) in chunks, 1 vs 2 processes. Configurations alternate round by
round, and the ratios are taken within each round, then their median (the machines are shared and noisy:
neighbours' jobs come and go between rounds). Each configuration's workers are warmed up (spawned, torch
imported, data generated) before its clock starts. Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from autoloss.evolution.config import budget_config
from autoloss.evolution.proxy import base_schedule
from autoloss.evolution.work import proxy_task, screen_task, trial_spec
from autoloss.executors import make_executor
from autoloss.spaces.branches import branch
from autoloss.spaces.generate import ramped_half_and_half
from machine import describe as describe_machine

BRANCH = "cls-sigmoid"


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def experiment(iterations: int) -> Callable[[int], dict]:
    """The search's trial spec of an `iterations`-long fcos-shapes proxy, for a seed."""
    cfg = budget_config("default").replace(task={"iterations": iterations})
    settings = cfg.load_task().config()
    return lambda seed: trial_spec(cfg.task.name, settings, base_schedule(cfg, seed))


def proxy_rate(
    backend: str, workers: int, exp: Callable[[int], dict], trainings: int, seed0: int
) -> tuple[float, list]:
    """Trainings per minute, with every slot kept busy; the statuses say whether they really trained."""
    ex = make_executor(backend, workers)
    try:
        # Warm-up: spawn each worker, import torch, generate the dataset into its cache (one iteration).
        warm = experiment(1)
        for f in [ex.submit(proxy_task, warm(10_000 + i), "default", "default") for i in range(workers)]:
            f.result()
        start = time.perf_counter()
        futures = [ex.submit(proxy_task, exp(seed0 + i), "default", "default") for i in range(trainings)]
        results = [f.result() for f in futures]
        seconds = time.perf_counter() - start
    finally:
        ex.shutdown()
    return 60.0 * trainings / seconds, [r["status"] for r in results]


def screen_rate(workers: int, texts: list[str], chunk: int) -> float:
    ex = make_executor("process", workers)
    try:
        for f in [ex.submit(screen_task, texts[:20], BRANCH, True, True) for _ in range(workers)]:
            f.result()  # warm-up: spawn, imports, compiled-op caches
        start = time.perf_counter()
        futures = [
            ex.submit(screen_task, texts[i : i + chunk], BRANCH, True, True)
            for i in range(0, len(texts), chunk)
        ]
        for f in futures:
            f.result()
        seconds = time.perf_counter() - start
    finally:
        ex.shutdown()
    return len(texts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=100, help="proxy training length [100]")
    parser.add_argument("--trainings", type=int, default=2, help="trainings per worker per round [2]")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds [4]")
    parser.add_argument("--candidates", type=int, default=3000, help="random trees screened per run [3000]")
    parser.add_argument("--chunk", type=int, default=200, help="screening chunk size [200]")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray column")
    args = parser.parse_args()

    exp = experiment(args.iterations)
    configs = [("process", 1), ("process", 2)] + ([] if args.no_ray else [("ray", 2)])
    rates: dict[tuple[str, int], list[float]] = {c: [] for c in configs}
    print(f"load average at the start: {load()}", flush=True)
    for r in range(args.rounds):
        order = configs if r % 2 == 0 else configs[::-1]
        for backend, workers in order:
            rate, statuses = proxy_rate(backend, workers, exp, args.trainings * workers, seed0=100 * r)
            if set(statuses) != {"ok"}:
                raise SystemExit(f"{backend} x{workers}: trainings did not all finish: {statuses}")
            rates[(backend, workers)].append(rate)
            print(f"round {r}: {backend} x{workers}: {rate:.2f} trainings/min", flush=True)

    trees = ramped_half_and_half(branch(BRANCH), random.Random(0), args.candidates)
    texts = [t.text for t in trees]
    screen: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for workers in (1, 2) if r % 2 == 0 else (2, 1):
            screen[workers].append(screen_rate(workers, texts, args.chunk))
            print(f"round {r}: screening x{workers}: {screen[workers][-1]:.0f} candidates/s", flush=True)

    def med(values: list[float]) -> float:
        return statistics.median(values)

    def ratio(a: list[float], b: list[float]) -> float:
        """Median over rounds of a/b, each pair measured in the same round."""
        return med([x / y for x, y in zip(a, b, strict=True)])

    one, two = rates[("process", 1)], rates[("process", 2)]
    print()
    date = time.strftime("%Y-%m-%d")
    print(f"Machine: {describe_machine()}. Date: {date}. Load average at the end: {load()}.")
    print(
        f"Proxy: fcos-shapes, {args.iterations} iterations + evaluation on 200 images, "
        f"{args.trainings} trainings per worker per round; {args.rounds} interleaved rounds; rates are "
        "medians over rounds, ratios medians of the per-round ratios."
    )
    print()
    print("| work | backend | workers | rate | ratio | target |")
    print("|---|---|---|---|---|---|")
    print(f"| proxy trainings | process | 1 | {med(one):.2f} /min | 1.00 | |")
    r2 = ratio(two, one)
    verdict = "met" if r2 >= 1.4 else "missed"
    print(f"| proxy trainings | process | 2 | {med(two):.2f} /min | {r2:.2f} vs x1 | ≥ 1.40 — {verdict} |")
    if not args.no_ray:
        ray2 = rates[("ray", 2)]
        rr = ratio(ray2, two)
        verdict = "met" if rr >= 0.9 else "missed"
        print(
            f"| proxy trainings | ray | 2 | {med(ray2):.2f} /min | {rr:.2f} vs process x2 "
            f"| ≥ 0.90 — {verdict} |"
        )
    s1, s2 = screen[1], screen[2]
    rs = ratio(s2, s1)
    verdict = "met" if rs >= 1.4 else "missed"
    work = f"screening ({args.candidates} random trees)"
    print(f"| {work} | process | 1 | {med(s1):.0f} /s | 1.00 | |")
    print(f"| {work} | process | 2 | {med(s2):.0f} /s | {rs:.2f} vs x1 | ≥ 1.40 — {verdict} |")
    print()
    print(
        "Per round (trainings/min): "
        + "; ".join(f"{b} x{w}: {[round(v, 2) for v in rates[(b, w)]]}" for b, w in configs)
    )


if __name__ == "__main__":
    main()
