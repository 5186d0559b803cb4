"""`report.md` for a run directory: the result table, the top losses, the funnel and where time went."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autoloss.report.plots import STAGES, plot_funnel, plot_map, plot_time
from autoloss.runs.rundir import RunDir


def _baseline(run: RunDir, seed: int) -> float | None:
    for r in run.read("evaluations.jsonl"):
        if (
            r["cls"] == "default"
            and r["reg"] == "default"
            and r["seed"] == seed
            and r["result"]["status"] == "ok"
        ):
            return r["result"]["metrics"].get("AP")
    return None


def write_report(path: str | Path, top: int = 5) -> Path:
    from autoloss.loss import Loss
    from autoloss.search.outputs import summary_markdown

    run = RunDir.open(path)
    cfg = run.config()
    gens = run.read("generations.jsonl")
    seed = cfg.get("evolution", {}).get("seed", 0)
    baseline = _baseline(run, seed)
    lines = [f"# autoloss search report: `{run.path.name}`", ""]
    p, e, filters = cfg.get("proxy", {}), cfg.get("evolution", {}), cfg.get("filters", {})
    lines += [
        f"Proxy: {p.get('detector')} / {p.get('backbone')} on `{p.get('data')}`, preset `{p.get('preset')}`, "
        f"{p.get('iterations') or p.get('epochs')} {'iterations' if p.get('iterations') else 'epochs'}. "
        f"Search: branch `{e.get('branch')}`, {e.get('generations')} generations x {e.get('offspring')} "
        f"offspring, top-K {e.get('top_k')}, seed {seed}. "
        f"Filters: CPV {'on' if filters.get('cpv') else 'off'}, MOS {'on' if filters.get('mos') else 'off'}.",
        "",
    ]
    summary_path = run.path / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        lines += ["## Result", "", summary_markdown(summary)]
        lines += [
            "`published` is CSE-Autoloss-B (one-stage) or -A (two-stage) as released by the paper's authors; "
            "`beyond seed noise` requires a win on every seed and a mean gain above two standard errors.",
            "",
        ]
    else:
        lines += ["The search has not finished: no final table yet.", ""]

    hall = run.path / "hall_of_fame.csv"
    if hall.is_file():
        rows = list(csv.DictReader(hall.open()))
        lines += ["## Top losses (proxy mAP on the search seed)", ""]
        if baseline is not None:
            lines += [f"Default losses on the same seed: mAP {baseline:.4f}.", ""]
        for b in sorted({r["branch"] for r in rows}):
            lines += [f"### {b}", ""]
            for r in [r for r in rows if r["branch"] == b][:top]:
                latex = Loss.parse(r["text"], b).latex()
                mos = f"{float(r['mos_score']):.3f}" if r["mos_score"] else "—"
                lines += [
                    f"- mAP **{float(r['proxy_ap']):.4f}**, MOS {mos}, generation {r['generation']}",
                    f"  - `{r['text']}`",
                    f"  - infix: `{r['infix']}`",
                    f"  - $${latex}$$",
                ]
            lines.append("")

    if gens:
        plot_map(gens, baseline, run.path / "map_per_generation.png")
        plot_funnel(gens, run.path / "funnel.png")
        plot_time(gens, run.path / "time_per_stage.png")
        lines += [
            "## Proxy mAP per generation",
            "",
            "![mAP per generation](map_per_generation.png)",
            "",
            "## The funnel",
            "",
            "| unit | " + " | ".join(STAGES) + " | screening s | proxy s |",
            "|---|" + "---|" * (len(STAGES) + 2),
        ]
        for g in gens:
            lines.append(
                f"| {g['unit']} | "
                + " | ".join(str(g["counts"].get(s, 0)) for s in STAGES)
                + f" | {g.get('screen_seconds', 0):.1f} | {g.get('proxy_seconds', 0):.1f} |"
            )
        total = {s: sum(g["counts"].get(s, 0) for g in gens) for s in STAGES}
        if total["generated"]:
            rejected = 1 - total["proxy"] / total["generated"]
            lines += [
                "",
                f"Across all generations the filters kept {total['proxy']} of {total['generated']} "
                f"generated candidates for proxy training ({rejected:.2%} rejected or not selected).",
                "",
            ]
        lines += [
            "![funnel](funnel.png)",
            "",
            "## Where the time went",
            "",
            "![time](time_per_stage.png)",
            "",
        ]
    out = run.write_text("report.md", "\n".join(lines) + "\n")
    return out
