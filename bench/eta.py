"""How good was a search's ETA? What it predicted at a share of the work done, against when it really ended.

    .venv/bin/python bench/eta.py RUN_DIR [--at 0.1,0.25,0.5,0.75] [--json]

Every search appends where it stands to `<run>/progress.jsonl` after each finished training and unit
(`autoloss.evolution.progress.ProgressLog`): seconds since the run began, proxy-length trainings done and
planned, and the ETA shown then. For each share s, this takes the first line at which done / planned ≥ s
and compares its ETA with the time the run still took (its last line's seconds minus that line's):

    error = (predicted remaining - actual remaining) / actual remaining

positive when the ETA was too pessimistic. [5/5]'s target: |error| ≤ 20 % at 25 % done, on one default
search. A run that was killed and resumed counts only the seconds the processes ran (a gap between them is
not search time); a run that did not finish has no actual end and is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from autoloss.evolution.progress import PROGRESS_LOG, format_duration


def read_log(run: Path) -> list[dict]:
    path = run / PROGRESS_LOG
    if not path.is_file():
        raise SystemExit(f"{run} has no {PROGRESS_LOG}: it was run before the ETA was logged")
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    if not lines or lines[-1].get("unit") != "final" or lines[-1].get("event") != "unit-done":
        raise SystemExit(f"{run} did not finish (its last progress line is not the final's end)")
    return lines


def eta_errors(lines: list[dict], shares: list[float]) -> list[dict]:
    """One row per share: the line it was judged at, the ETA then, the time really left, and the error."""
    end = lines[-1]["elapsed_s"]
    rows = []
    for share in shares:
        at = next(
            (
                x
                for x in lines
                if x["total"] > 0 and x["done"] / x["total"] >= share and x["eta_s"] is not None
            ),
            None,
        )
        if at is None:
            rows.append({"share": share, "reached": False})
            continue
        actual = end - at["elapsed_s"]
        predicted = at["eta_s"]
        rows.append(
            {
                "share": share,
                "reached": True,
                "done": at["done"],
                "total": at["total"],
                "elapsed_s": at["elapsed_s"],
                "predicted_s": predicted,
                "actual_s": actual,
                "error": (predicted - actual) / actual if actual > 0 else None,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--at", default="0.1,0.25,0.5,0.75", help="shares of the planned work, comma-separated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    lines = read_log(args.run)
    rows = eta_errors(lines, [float(s) for s in args.at.split(",")])
    if args.json:
        json.dump({"run": str(args.run), "end_s": lines[-1]["elapsed_s"], "rows": rows}, sys.stdout, indent=2)
        print()
        return 0
    end = lines[-1]
    print(f"{args.run}: ended at {format_duration(end['elapsed_s'])} ({end['done']:g} proxy-length units)")
    print("| done | at | ETA then | really left | error |")
    print("|---|---|---|---|---|")
    for r in rows:
        if not r["reached"]:
            print(f"| {r['share']:.0%} | not reached | | | |")
            continue
        err = "n/a" if r["error"] is None else f"{r['error']:+.1%}"
        print(
            f"| {r['share']:.0%} ({r['done']:g}/{r['total']:g}) | {format_duration(r['elapsed_s'])} | "
            f"{format_duration(r['predicted_s'])} | {format_duration(r['actual_s'])} | {err} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
