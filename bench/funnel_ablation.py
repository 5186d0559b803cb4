"""Is the CSE funnel worth it? The same budget of proxy trainings, three ways, several seeds:

- `cse`:    evolution with CPV + MOS (the paper's search),
- `plain`:  evolution without CPV and MOS (`--no-cpv --no-mos`): candidates picked at random among valid ones,
- `random`: fresh random trees every generation, no CPV/MOS (random search).

For each run: best proxy mAP reached vs proxy trainings spent, the share of proxy trainings wasted on
candidates that diverge/fail or score under half the default loss's mAP, and the number of proxy
trainings needed to first beat the default loss. This is our version of the paper's "20x faster" figure.

    .venv/bin/python bench/funnel_ablation.py --seeds 0 1 --budget 16 --iterations 150 --out runs/ablation
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from autoloss.evolution.api import run_search
from autoloss.evolution.config import budget_config
from machine import describe as describe_machine

ARMS = {
    "cse": ({"cpv": True, "mos": True}, "evolution"),
    "plain": ({"cpv": False, "mos": False}, "evolution"),
    "random": ({"cpv": False, "mos": False}, "random"),
}


def proxy_sequence(run_dir: Path) -> tuple[float, list[dict]]:
    """The default loss's mAP and the candidates' proxy results in the order they were spent."""
    evals = [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]
    base = next(e for e in evals if e["cls"] == "default" and e["reg"] == "default")
    default_ap = base["result"]["metrics"].get("AP", 0.0) if base["result"]["status"] == "ok" else 0.0
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    proxied = [e for e in events if e["stage"] == "proxy"]
    proxied.sort(key=lambda e: (e["generation"],))  # stable: within a generation, the order they were chosen
    return default_ap, proxied


def measure(default_ap: float, proxied: list[dict]) -> dict:
    best, curve, first_beat = 0.0, [], None
    wasted = 0
    for i, e in enumerate(proxied, start=1):
        ap = e.get("ap") or 0.0
        if e.get("status") != "ok" or ap < 0.5 * default_ap:
            wasted += 1
        best = max(best, ap)
        curve.append(best)
        if first_beat is None and ap > default_ap:
            first_beat = i
    n = len(proxied)
    return {
        "default_ap": default_ap,
        "trainings": n,
        "best_ap": best,
        "curve": curve,
        "wasted_share": wasted / n if n else float("nan"),
        "first_beat": first_beat,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--budget", type=int, default=16, help="proxy trainings per run (candidates)")
    parser.add_argument("--iterations", type=int, default=150, help="proxy training length")
    parser.add_argument("--offspring", type=int, default=500)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    args = parser.parse_args()

    out = Path(args.out)
    results: dict[str, list[dict]] = {}
    t0 = time.time()
    for arm in args.arms:
        filters, strategy = ARMS[arm]
        for seed in args.seeds:
            run_dir = out / f"{arm}-seed{seed}"
            # +1: the budget counts the baseline training of the default loss too.
            cfg = budget_config("default").replace(
                evolution={
                    "branch": "cls",
                    "generations": 100,
                    "offspring": args.offspring,
                    "top_k": args.top_k,
                    "parents": args.top_k,
                    "max_proxy_evals": args.budget + 1,
                    "final_seeds": 1,
                    "seed": seed,
                    "strategy": strategy,
                },
                filters=filters,
                task={"iterations": args.iterations},
                backend={"workers": args.workers},
            )
            if not (run_dir / "summary.json").is_file():
                run_search(cfg, run_dir, overwrite=True)
            default_ap, proxied = proxy_sequence(run_dir)
            m = measure(default_ap, proxied)
            results.setdefault(arm, []).append({"seed": seed, **m})
            print(
                f"{arm} seed {seed}: {m['trainings']} trainings, best {m['best_ap']:.4f} "
                f"(default {default_ap:.4f}), wasted {m['wasted_share']:.0%}, first beat {m['first_beat']}",
                flush=True,
            )
    (out / "ablation.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "ablation.png")

    print(
        f"\nmachine: {describe_machine()}, {args.workers} workers; proxy {args.iterations} iterations; "
        f"budget {args.budget} candidate trainings; seeds {args.seeds}; {time.time() - t0:.0f} s in all"
    )
    print("| arm | best mAP (mean ± std) | default mAP | wasted trainings | trainings to beat default |")
    print("|---|---|---|---|---|")
    for arm, runs in results.items():
        best = [r["best_ap"] for r in runs]
        wasted = [r["wasted_share"] for r in runs]
        firsts = [r["first_beat"] for r in runs]
        beat = ", ".join("never" if f is None else str(f) for f in firsts)
        sd = statistics.stdev(best) if len(best) > 1 else 0.0
        default = statistics.fmean(r["default_ap"] for r in runs)
        waste = statistics.fmean(wasted)
        print(f"| {arm} | {statistics.fmean(best):.4f} ± {sd:.4f} | {default:.4f} | {waste:.0%} | {beat} |")


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    colours = {"cse": "C0", "plain": "C1", "random": "C2"}
    for arm, runs in results.items():
        for i, r in enumerate(runs):
            ax.step(
                range(1, len(r["curve"]) + 1),
                r["curve"],
                where="post",
                color=colours.get(arm),
                alpha=0.8,
                label=arm if i == 0 else None,
            )
    defaults = [r["default_ap"] for runs in results.values() for r in runs]
    if defaults:
        ax.axhline(statistics.fmean(defaults), color="grey", linestyle=":", label="default loss")
    ax.set_xlabel("proxy trainings spent")
    ax.set_ylabel("best proxy mAP so far")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
