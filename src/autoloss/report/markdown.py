"""`report.md` for a run directory: the result table, the finalists' rung history and loss curves, the top
losses, the funnel and where time went."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from autoloss.report.finalists import curve_lines, finalist_rung_lines
from autoloss.report.plots import STAGES, plot_funnel, plot_map, plot_time
from autoloss.runs.failpoints import failpoint
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


def stage_fidelity(run: RunDir) -> list[str]:
    """How well each stage predicted the next, on the candidates this run trained: MOS score -> rung-0 mAP
    (per branch), and rung r -> rung r+1 for the promoted (Kendall τ and Spearman ρ with bootstrap 95 %
    CIs)."""
    from autoloss.fidelity.ranks import rank_agreement

    events = run.read("events.jsonl")
    pairs: dict[str, tuple[list[float], list[float]]] = {}
    for e in events:
        if e.get("stage") == "proxy" and e.get("mos_score") is not None and e.get("status") == "ok":
            # Per branch: cls and reg MOS scores are on different scales, so a pooled ranking would
            # mostly measure which branch a candidate belongs to.
            name = f"MOS score -> rung 0 mAP ({e.get('branch', '?')})"
            xs, ys = pairs.setdefault(name, ([], []))
            xs.append(float(e["mos_score"]))
            ys.append(float(e["ap"]))
        elif e.get("stage") == "promote" and e.get("from_score") is not None:
            xs, ys = pairs.setdefault(f"rung {e['rung'] - 1} -> rung {e['rung']} mAP", ([], []))
            xs.append(float(e["from_score"]))
            ys.append(float(e["score"]))
    lines = [
        "## How well each stage predicted the next",
        "",
        "| stage -> next | candidates | Kendall τ [95 % CI] | Spearman ρ [95 % CI] |",
        "|---|---|---|---|",
    ]
    for name, (xs, ys) in pairs.items():
        if len(xs) < 4:  # a bootstrap over 3 points has no interval worth printing
            lines.append(f"| {name} | {len(xs)} | too few to tell | — |")
            continue
        a = rank_agreement(xs, ys)
        tl, th = a["kendall_tau_ci"]
        rl, rh = a["spearman_rho_ci"]
        lines.append(
            f"| {name} | {len(xs)} | {a['kendall_tau']:+.2f} [{tl:+.2f}, {th:+.2f}] | "
            f"{a['spearman_rho']:+.2f} [{rl:+.2f}, {rh:+.2f}] |"
        )
    if not pairs:
        lines.append("| (no trained candidates yet) | 0 | — | — |")
    lines += [
        "",
        "Promoted candidates are the best of their rung, so rung -> rung agreement is measured on a "
        "truncated range and reads lower than it would on all candidates.",
        "",
    ]
    return lines


def write_report(path: str | Path, top: int = 5) -> Path:
    from autoloss.evolution.config import SearchConfig
    from autoloss.evolution.outputs import summary_markdown
    from autoloss.loss import Loss

    run = RunDir.open(path)
    cfg = run.config()
    gens = run.read("generations.jsonl")
    seed = cfg.get("evolution", {}).get("seed", 0)
    baseline = _baseline(run, seed)
    lines = [f"# autoloss search report: `{run.path.name}`", ""]
    e, filters = cfg.get("evolution", {}), cfg.get("filters", {})
    t = SearchConfig.from_dict(cfg).task  # older versions migrated
    p = t.settings
    lines += [
        f"Proxy: task `{t.name}`, {p.get('detector')} / {p.get('backbone')} on `{p.get('data')}`, preset "
        f"`{p.get('preset')}`, {t.iterations or t.epochs} {'iterations' if t.iterations else 'epochs'}. "
        f"Search: branch `{e.get('branch')}`, {e.get('generations')} generations x {e.get('offspring')} "
        f"offspring, top-K {e.get('top_k')}, seed {seed}. "
        f"Filters: CPV {'on' if filters.get('cpv') else 'off'}, MOS {'on' if filters.get('mos') else 'off'}.",
        "",
    ]
    hall = run.path / "hall_of_fame.csv"
    rows: list[dict[str, str]] = []
    if hall.is_file():
        with hall.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    summary_path = run.path / "summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        lines += ["## Result", "", summary_markdown(summary)]
        lines += [
            "`published` is CSE-Autoloss-B (one-stage) or -A (two-stage) as released by the paper's authors. "
            "A verdict of `better` or `worse` means the 95 % interval of the paired gain excludes zero; with "
            "fewer than 3 seeds the table says `too few seeds to tell`.",
            "",
        ]
        lines += finalist_rung_lines(run, summary)
        lines += curve_lines(run, summary, rows)
    else:
        lines += ["The search has not finished: no final table yet.", ""]

    if hall.is_file():
        lines += [
            "## Top losses (highest rung reached, then mean fitness over that rung's seeds)",
            "",
            "Fitness: COCO AP on the search-val split (with several proxy tasks, the mean over tasks of AP "
            "relative to the default's); the final table above is on the test split.",
            "",
        ]
        if baseline is not None:
            lines += [f"Default losses at rung 0: fitness {baseline:.4f}.", ""]
        rung_cols = [k for k in (rows[0] if rows else {}) if k.startswith("rung") and k.endswith("_ap")]
        for b in sorted({r["branch"] for r in rows}):
            lines += [f"### {b}", ""]
            for r in [r for r in rows if r["branch"] == b][:top]:
                mos = f"{float(r['mos_score']):.3f}" if r["mos_score"] else "—"
                per_rung = ", ".join(
                    f"rung {c[4:-3]} {float(r[c]):.4f}" for c in rung_cols if r.get(c) not in (None, "")
                )
                name = f" ({r['named']})" if r.get("named") else ""
                lines += [
                    f"- rung {r['rung']}: mAP **{float(r['proxy_ap']):.4f}**{name} — {per_rung}; MOS {mos}"
                ]
                if r["text"] != "default":
                    latex = Loss.parse(r["text"], b).latex()
                    lines += [f"  - `{r['text']}`", f"  - infix: `{r['infix']}`", f"  - $${latex}$$"]
            lines.append("")
    lines += stage_fidelity(run)

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
        lines += pool_lines(gens)
        lines += [
            "![funnel](funnel.png)",
            "",
            "## Where the time went",
            "",
            "![time](time_per_stage.png)",
            "",
        ]
    failpoint("report")
    out = run.write_text("report.md", "\n".join(lines) + "\n")
    return out


def pool_lines(gens: list[dict]) -> list[str]:
    """What the survivor pool (`--survivor-pool`) did, per branch: survivors that waited in it, those
    trained from it, those it dropped, and those still waiting when the generations ended."""
    out = []
    for branch in dict.fromkeys(g["branch"] for g in gens if g.get("pool")):
        mine = [g["pool"] for g in gens if g["branch"] == branch and g.get("pool")]
        pooled, trained, expired = (sum(p[k] for p in mine) for k in ("pooled", "from_pool", "expired"))
        out.append(
            f"Survivor pool, {branch}: {pooled} survivors waited in it, {trained} were trained from it in a "
            f"later generation, {expired} were dropped for better ones, {mine[-1]['size']} wait at the end."
        )
    return [*out, ""] if out else []
