"""How well does a proxy rank losses the way real training does? A panel of loss pairs (the defaults, the
named and published losses, hand-made variants that train differently) is trained on candidate proxies and
on target tasks (real datasets, a longer schedule); Kendall τ / Spearman ρ with bootstrap CIs per pair.

    .venv/bin/python bench/fidelity.py                        # every proxy and target below, 2 seeds
    .venv/bin/python bench/fidelity.py --proxies fcos:shapes:128:300 --targets fcos:shapes:128:1500

Finished trainings are cached under --out: a re-run with more tasks trains only what is missing. Writes
fidelity.md and fidelity.json under --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from autoloss.fidelity import default_panel, parse_task, train_panel
from autoloss.fidelity.report import agreement_table, scores_by_task
from machine import describe as describe_machine

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MICRO = SHARED / "microcontrollers/annotations.coco.json"
BCCD = SHARED / "bccd/annotations.coco.json"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/fidelity")
    parser.add_argument(
        "--proxies",
        nargs="+",
        default=["fcos:shapes:128:300", "fcos:shapes:256:300", "fcos:shapes:128:900"],
        help="DETECTOR:DATA:SIZE:ITERATIONS",
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        default=[f"fcos:{MICRO}:native:300", f"fcos:{BCCD}:native:300"],
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    panel = default_panel("cls-sigmoid")
    pairs = [(e.cls, e.reg) for e in panel]
    proxies = [parse_task(t) for t in args.proxies]
    targets = [parse_task(t) for t in args.targets]
    seeds = list(range(args.seeds))
    t0 = time.time()
    records = []
    # Targets first: each proxy is judged against them as soon as it is done.
    for task in [*targets, *proxies]:
        t1 = time.time()
        records += train_panel([task], pairs, seeds, args.out, workers=args.workers)
        print(f"{task.name}: {time.time() - t1:.0f} s", flush=True)
    scores = scores_by_task(records, panel)
    rows = [
        {"proxy": p.name, "target": t.name, **agreement_table(scores[p.name], scores[t.name])}
        for p in proxies
        for t in targets
    ]
    out = Path(args.out)
    (out / "fidelity.json").write_text(json.dumps({"scores": scores, "agreement": rows}, indent=2) + "\n")
    lines = [f"Machine: {describe_machine()}. Wall time {time.time() - t0:.0f} s. Seeds {seeds}.", ""]
    lines += [
        "| proxy | target | Kendall τ [95 % CI] | Spearman ρ [95 % CI] | top-1 in target's top-3 "
        "| top-3 overlap |"
    ]
    lines += ["|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['proxy']} | {r['target']} | {r['kendall_tau']:+.2f} [{r['kendall_tau_ci'][0]:+.2f}, "
            f"{r['kendall_tau_ci'][1]:+.2f}] | {r['spearman_rho']:+.2f} [{r['spearman_rho_ci'][0]:+.2f}, "
            f"{r['spearman_rho_ci'][1]:+.2f}] | {'yes' if r['top1_in_target_top3'] else 'no'} | "
            f"{r['top3_overlap']:.2f} |"
        )
    lines += ["", "| loss | " + " | ".join(t.name for t in [*proxies, *targets]) + " |"]
    lines += ["|---" * (1 + len(proxies) + len(targets)) + "|"]
    for e in panel:
        cells = [f"{scores[t.name][e.label]['mean']:.4f}" for t in [*proxies, *targets]]
        lines.append(f"| {e.label} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "fidelity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
