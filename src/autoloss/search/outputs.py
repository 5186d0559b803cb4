"""What a finished (or stopped) search leaves for people: hall of fame, best losses, summary."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from autoloss.loss import Loss
from autoloss.runs.rundir import clean
from autoloss.spaces.named import label as short

HALL_SIZE = 20


def hall_of_fame(search: Any) -> list[dict[str, Any]]:
    rows = []
    for b, evo in search.engines.items():
        for r in evo.best(HALL_SIZE):
            rows.append(
                {
                    "branch": b,
                    "text": r.text,
                    "infix": Loss.parse(r.text, b).infix(),
                    "mos_score": r.mos_score,
                    "proxy_ap": r.ap,
                    "generation": r.generation,
                }
            )
    rows.sort(key=lambda row: (row["branch"], -row["proxy_ap"], row["text"]))
    return rows


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})
    return buf.getvalue()


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def summary_markdown(summary: dict[str, Any]) -> str:
    table = summary["table"]
    lines = [
        f"Proxy mAP (COCO AP on the val split) over seeds {', '.join(map(str, summary['seeds']))}:",
        "",
        "| losses | cls | reg | mAP mean ± std | gain vs default | beyond seed noise |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        gain = row.get("vs_default")
        gain_s = f"{gain['mean']:+.4f}" if gain else "—"
        beyond = ("yes" if gain["beyond_noise"] else "no") if gain else "—"
        cls_s, reg_s = short(row["cls"], 200), short(row["reg"], 200)
        lines.append(
            f"| {label} | `{cls_s}` | `{reg_s}` | {_fmt(row['mean'], row['std'])} | {gain_s} | {beyond} |"
        )
    verdict = best_named_verdict(summary)
    if verdict:
        lines += ["", verdict]
    if summary.get("stopped"):
        lines += ["", f"The generations stopped early: {summary['stopped']}."]
    return "\n".join(lines) + "\n"


def best_named_verdict(summary: dict[str, Any]) -> str | None:
    """One sentence: does the found pair beat the best named loss the search trained, beyond the noise?"""
    table = summary["table"]
    gain = table.get("found", {}).get("vs_best_named")
    if gain is None:
        return None
    named = table["best named"]
    which = short(named["cls"]) if named["cls"] != "default" else short(named["reg"])
    per_seed = ", ".join(f"{d:+.4f}" for d in gain["diffs"])
    beyond = "beyond the seed noise" if gain["beyond_noise"] else "not beyond the seed noise"
    return f"Found vs the best named loss ({which}): {gain['mean']:+.4f} mAP (per seed {per_seed}), {beyond}."


def write_outputs(search: Any) -> None:
    run = search.run
    rows = hall_of_fame(search)
    run.write_text(
        "hall_of_fame.csv", _csv(rows, ["branch", "text", "infix", "mos_score", "proxy_ap", "generation"])
    )
    summary = search.summary
    if summary is None:
        return
    found_cls, found_reg = summary["table"]["found"]["cls"], summary["table"]["found"]["reg"]
    cls_branch = search.cfg.cls_branch
    for name, text, b in (("cls", found_cls, cls_branch), ("reg", found_reg, "reg")):
        loss = Loss.resolve(text, b) if text != "default" else None
        run.write_text(f"best/{name}.txt", (loss.text if loss else "default") + "\n")
        payload = loss.to_json() if loss else {"branch": b, "expr": None, "text": "default"}
        run.write_text(f"best/{name}.json", json.dumps(payload, indent=2) + "\n")
    run.write_text("best/summary.md", summary_markdown(summary))
    run.write_text("summary.json", json.dumps(clean(summary), indent=2, default=str) + "\n")
