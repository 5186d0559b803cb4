"""Aggregate transfer records into mean ± std per cell, paired gains over seeds (95 % t interval, see
autoloss.stats), Markdown, CSV and a plot."""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from autoloss.data_specs import is_builtin, is_generated
from autoloss.stats import paired_comparison

METRICS = ("AP", "AP50", "AP75")


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["detector"], r["data"], r["label"]), []).append(r)
    rows = []
    for (detector, data, label), recs in groups.items():
        recs.sort(key=lambda r: r["seed"])
        row: dict[str, Any] = {
            "detector": detector,
            "data": data,
            "label": label,
            "cls": recs[0]["cls"],
            "reg": recs[0]["reg"],
            "seeds": [r["seed"] for r in recs],
            "failed": sum(r["status"] != "ok" for r in recs),
        }
        for m in METRICS:
            values = [r["metrics"].get(m, 0.0) if r["status"] == "ok" else 0.0 for r in recs]
            row[m] = values
            row[f"{m}_mean"] = statistics.fmean(values)
            row[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    by_cell = {(r["detector"], r["data"], r["label"]): r for r in rows}
    for row in rows:
        base = by_cell.get((row["detector"], row["data"], "default"))
        if base is not None and row["label"] != "default":
            row["vs_default"] = paired_comparison(row["AP"], base["AP"])
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    from autoloss.evolution.outputs import gain_cells
    from autoloss.spaces.named import label as short

    lines = [
        "COCO AP on each dataset's test split (images no selection saw), trained on its train split; "
        "mean ± std over seeds, gains paired over seeds.",
        "",
        "| detector | data | losses | cls | reg | mAP | AP50 | AP75 | Δ mAP vs default [95 % CI] | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = r.get("vs_default")
        data = r["data"] if is_generated(r["data"]) or is_builtin(r["data"]) else Path(r["data"]).parent.name
        cells = [f"{r[f'{m}_mean']:.4f} ± {r[f'{m}_std']:.4f}" for m in METRICS]
        cells += list(gain_cells(gain))
        head = [r["detector"], data, r["label"], f"`{short(r['cls'], 40)}`", f"`{short(r['reg'], 40)}`"]
        lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    fields = ["detector", "data", "label", "cls", "reg", "seeds", "failed"]
    fields += [f"{m}_{s}" for m in METRICS for s in ("mean", "std")] + [
        "gain_mean",
        "gain_std",
        "gain_ci_low",
        "gain_ci_high",
        "p_value",
        "verdict",
        "beyond_noise",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        gain = r.get("vs_default") or {}
        w.writerow(
            {
                **r,
                "seeds": " ".join(map(str, r["seeds"])),
                "gain_mean": gain.get("mean", ""),
                "gain_std": gain.get("std", ""),
                "gain_ci_low": (gain.get("ci") or ["", ""])[0],
                "gain_ci_high": (gain.get("ci") or ["", ""])[1],
                "p_value": gain.get("p_value", ""),
                "verdict": gain.get("verdict", ""),
                "beyond_noise": gain.get("beyond_noise", ""),
            }
        )
    return buf.getvalue()


def bar_plot(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["detector"], r["data"]) for r in rows})
    labels = sorted(
        {r["label"] for r in rows}, key=lambda s: (s != "default", s != "published", s != "found", s)
    )
    width = 0.8 / max(1, len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(cells)), 3.8))
    index = {(r["detector"], r["data"], r["label"]): r for r in rows}
    for j, label in enumerate(labels):
        xs, ys, es = [], [], []
        for i, cell in enumerate(cells):
            r = index.get((*cell, label))
            if r is not None:
                xs.append(i + j * width)
                ys.append(r["AP_mean"])
                es.append(r["AP_std"])
        ax.bar(xs, ys, width=width, yerr=es, capsize=2, label=label)
    names = [f"{d}\n{data if is_generated(data) else Path(data).parent.name}" for d, data in cells]
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cells))], names, fontsize=8)
    ax.set_ylabel("mAP (mean ± std over seeds)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
