"""Which real-data proxy configuration ranks losses like real training? One cached matrix, scored by
leave-one-dataset-out Kendall τ.

The 14-loss panel is trained on every built-in real set at each candidate proxy protocol (scored on
search-val, as a search selects) and at a fixed target protocol (1,500 iterations, 256 px, >= 3 seeds,
trained on train, scored on test). A candidate configuration is a set of proxy protocols; its ranking of the
panel is the mean over its tasks of each loss's AP relative to the default's (the search's multi-task
fitness). Leave-one-dataset-out: the configuration built from the *other* sets is compared with the left-out
set's target, so a configuration is never scored against data it was built from. Each target's noise ceiling
is τ between two disjoint halves of its seeds (bootstrap over seed assignments). Aquarium, when given
(--heldout), is only ever a target: measured once, for the chosen configuration and a baseline.

    .venv/bin/python bench/fidelity_matrix.py train [--stage proxies|targets|all]   # cached, resumable
    .venv/bin/python bench/fidelity_matrix.py report                                 # tables from the cache

Trainings are cached under --out (default ~/.cache/autoloss/fidelity-matrix, outside the work tree), keyed
by the data's content and the resolved settings, so a later session resumes instead of repeating.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from autoloss.fidelity import default_panel, parse_task, train_panel
from autoloss.fidelity.ranks import noise_ceiling, rank_agreement, tau_over_losses_and_seeds

SETS = ("bccd", "microcontrollers", "thermal")
PROXIES = ("128:300", "256:300")  # SIZE:ITERATIONS of each candidate proxy protocol
TARGET = "256:1500"
PROXY_SEEDS = (0, 1)
TARGET_SEEDS = (0, 1, 2)
DEFAULT_OUT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autoloss" / "fidelity-matrix"


def tasks(stage: str) -> list[tuple[object, tuple[int, ...]]]:
    """(TaskSpec, seeds) to train, proxies first (cheap, and what the choice needs first)."""
    out = []
    if stage in ("proxies", "all"):
        out += [(parse_task(f"fcos:{d}:{p}"), PROXY_SEEDS) for p in PROXIES for d in SETS]
    if stage in ("targets", "all"):
        out += [(parse_task(f"fcos:{d}:{TARGET}", split="test"), TARGET_SEEDS) for d in SETS]
    return out


def train(out: Path, stage: str, workers: int) -> None:
    pairs = [(e.cls, e.reg) for e in default_panel("cls-sigmoid")]
    for spec, seeds in tasks(stage):
        t0 = time.time()
        records = train_panel([spec], pairs, list(seeds), out, workers=workers)
        ok = sum(r["status"] == "ok" for r in records)
        print(f"{spec.name}: {len(records)} trainings ({ok} ok) in {time.time() - t0:.0f} s", flush=True)


def _aps(out: Path, spec, seeds) -> dict[str, list[float]] | None:
    """AP per panel label and seed from the cache (nothing is trained), None where a cell is incomplete."""
    from autoloss.evolution.fitness import ap_of
    from autoloss.evolution.proxy import EVALUATIONS, eval_id
    from autoloss.runs.cell_cache import cell_folder, identity
    from autoloss.runs.rundir import RunDir

    folder = cell_folder(out / "tasks", spec.protocol, identity(spec.config()))
    cache = {r["id"]: r["result"] for r in RunDir(folder).read(EVALUATIONS)}
    got = {}
    for e in default_panel("cls-sigmoid"):
        results = [cache.get(eval_id(e.cls, e.reg, s, 1, "cpu", spec.split)) for s in seeds]
        if any(r is None for r in results):
            return None
        got[e.label] = [ap_of(r) for r in results]
    return got


def relative(aps: dict[str, list[float]]) -> dict[str, float]:
    base = statistics.fmean(aps["default"]) or 1e-9
    return {k: statistics.fmean(v) / base for k, v in aps.items()}


def report(out: Path) -> str:
    cells = {}
    for spec, seeds in tasks("all"):
        got = _aps(out, spec, seeds)
        if got is not None:
            cells[(spec.data, f"{spec.image_size}:{spec.iterations}", spec.split)] = got
    lines = [
        "| configuration (proxy tasks) | left-out set | against | τ [95 % CI, losses and seeds] | "
        "left-out's noise ceiling |",
        "|---|---|---|---|---|",
    ]
    for protocol in PROXIES:
        for held in SETS:
            others = [d for d in SETS if d != held]
            proxies = [cells.get((d, protocol, "val")) for d in others]
            target = cells.get((held, TARGET, "test"))
            against = f"its target ({TARGET.replace(':', ' px, ')} it, test)"
            if target is None:
                # Until the targets are trained: the left-out set's own proxy at the same protocol, i.e. how
                # well the other sets' ranking predicts a different dataset's at equal cost.
                target = cells.get((held, protocol, "val"))
                against = f"its own {protocol.replace(':', ' px, ')} it proxy (interim: no target yet)"
            if target is None or any(p is None for p in proxies):
                lines.append(f"| {protocol} on {'+'.join(others)} | {held} | (not trained yet) | | |")
                continue
            rel = [relative(p) for p in proxies]
            labels = list(target)
            # per seed, the mean over the configuration's tasks of AP relative to each task's default
            score_seeds = [
                [statistics.fmean(p[k][i] / (statistics.fmean(p["default"]) or 1e-9) for p in proxies)
                 for i in range(len(PROXY_SEEDS))]
                for k in labels
            ]  # fmt: skip
            score = [statistics.fmean(r[k] for r in rel) for k in labels]
            goal = [target[k] for k in labels]
            tau = rank_agreement(score, [statistics.fmean(g) for g in goal])
            lo, hi = tau_over_losses_and_seeds(score_seeds, goal)
            lines.append(
                f"| {protocol} on {'+'.join(others)} | {held} | {against} | {tau['kendall_tau']:+.2f} "
                f"[{lo:+.2f}, {hi:+.2f}] | {noise_ceiling(goal):+.2f} |"
            )
    lines += ["", "AP per loss (mean over seeds):", ""]
    keys = sorted(cells)
    lines.append("| loss | " + " | ".join(f"{d} {p} ({s})" for d, p, s in keys) + " |")
    lines.append("|---|" + "---|" * len(keys))
    for label in default_panel_labels():
        lines.append(
            f"| {label} | " + " | ".join(f"{statistics.fmean(cells[k][label]):.4f}" for k in keys) + " |"
        )
    return "\n".join(lines)


def default_panel_labels() -> list[str]:
    return [e.label for e in default_panel("cls-sigmoid")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("train", "report"))
    parser.add_argument("--stage", choices=("proxies", "targets", "all"), default="all")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.command == "train":
        train(args.out, args.stage, args.workers)
    else:
        text = report(args.out)
        print(text)
        (args.out / "matrix.md").write_text(text + "\n")
        print(json.dumps({"out": str(args.out)}))


if __name__ == "__main__":
    main()
