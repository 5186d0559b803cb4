"""Does MOS rank the candidates a search trained? Kendall τ of MOS score vs rung-0 proxy mAP.

    .venv/bin/python bench/mos_rank.py RUN_DIR [RUN_DIR ...] [--seeds 0,1,2] [--write]

Reads each run's `events.jsonl`: every candidate trained at rung 0 (stage "proxy", status ok) with the
MOS score the search recorded and the mAP the proxy gave it. Then it scores the same candidates again
with this checkout's MOS:

- "recorded": the scores as the search computed them (the code of that run);
- "now": the default MOS config of this checkout (seed 0), on the same candidates;
- "mean of seeds ...": the mean score over several MOS seeds (the toy data and initial weights change
  with the seed), the cheapest way to average out a single simulation's luck.

τ is computed within each branch (classification and regression MOS scores are on different scales, and
a cls candidate's mAP is earned with the default reg loss and vice versa), with paired-bootstrap 95 %
intervals (autoloss.fidelity.ranks), and pooled over branches the way the search report does it. A
dozen candidates per run give wide intervals; pass several run directories to pool them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
from pathlib import Path

import torch

from autoloss.checks.config import CheckConfig
from autoloss.checks.mos import simulate_batch
from autoloss.fidelity.ranks import rank_agreement
from autoloss.loss import Loss

ROOT = Path(__file__).resolve().parent.parent


def trained(run: Path) -> list[dict]:
    out = []
    for line in (run / "events.jsonl").read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e.get("stage") == "proxy" and e.get("status") == "ok" and e.get("mos_score") is not None:
            out.append(
                {"run": run.name, "branch": e["branch"], "text": e["text"], "recorded": e["mos_score"]}
            )
            out[-1]["ap"] = float(e["ap"])
    return out


def scores(cands: list[dict], seed: int) -> list[float | None]:
    config = dataclasses.replace(CheckConfig().mos, seed=seed)
    out: list[float | None] = [None] * len(cands)
    for branch in sorted({c["branch"] for c in cands}):
        idx = [i for i, c in enumerate(cands) if c["branch"] == branch]
        sims = simulate_batch([Loss.parse(cands[i]["text"], branch) for i in idx], config)
        for i, sim in zip(idx, sims, strict=True):
            out[i] = sim.score
    return out


def tau_cell(xs: list[float], ys: list[float]) -> str:
    if len(xs) < 4:
        return f"{len(xs)} (too few)"
    a = rank_agreement(xs, ys)
    lo, hi = a["kendall_tau_ci"]
    return f"{a['kendall_tau']:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--seeds", default="0,1,2", help="MOS seeds to average for the last column")
    parser.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    cands = [c for run in args.runs for c in trained(run)]
    if not cands:
        raise SystemExit("no trained candidates with a MOS score in these runs' events.jsonl")
    columns: dict[str, list[float | None]] = {"recorded": [c["recorded"] for c in cands]}
    per_seed = {s: scores(cands, s) for s in seeds}
    columns["now (seed 0)"] = per_seed[0] if 0 in per_seed else scores(cands, 0)
    mean = []
    for i in range(len(cands)):
        vals = [per_seed[s][i] for s in seeds]
        mean.append(None if any(v is None for v in vals) else sum(vals) / len(vals))
    columns[f"mean of seeds {args.seeds}"] = mean
    same = sum(a == b for a, b in zip(columns["recorded"], columns["now (seed 0)"], strict=True))
    lines = [
        f"MOS score vs rung-0 mAP on {len(cands)} trained candidates from "
        f"{', '.join(r.name for r in args.runs)}; Kendall τ [95 % bootstrap CI]:",
        "",
        "| candidates | n | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    groups = [
        (b, [i for i, c in enumerate(cands) if c["branch"] == b])
        for b in sorted({c["branch"] for c in cands})
    ]
    groups.append(("all, pooled (as the search report)", list(range(len(cands)))))
    for name, idx in groups:
        cells = []
        for col in columns.values():
            keep = [i for i in idx if col[i] is not None]
            cells.append(tau_cell([col[i] for i in keep], [cands[i]["ap"] for i in keep]))
        lines.append(f"| {name} | {len(idx)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Recomputed seed-0 scores equal to the recorded ones: {same} of {len(cands)} (the rest differ by "
        "the float32 rounding of this checkout's rewritten loss code, or by a changed MOS).",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        machine = f"{os.cpu_count()}-core {platform.machine()} VM, torch {torch.__version__} (CPU)"
        header = (
            "\n## Does MOS rank what the search trains? (`bench/mos_rank.py`)\n\n"
            f"Machine: {machine}. Date: {datetime.date.today().isoformat()}.\n\n"
        )
        with open(ROOT / "BENCHMARKS.md", "a", encoding="utf-8") as f:
            f.write(header + text + "\n")


if __name__ == "__main__":
    main()
