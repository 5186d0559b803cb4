"""What a finished (or stopped) search leaves for people: hall of fame, best losses, summary."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from autoloss.evolution.engine import DEFAULT
from autoloss.loss import Loss
from autoloss.runs.failpoints import failpoint
from autoloss.runs.rundir import clean
from autoloss.spaces.named import label as short
from autoloss.spaces.named import name_of
from autoloss.stats import describe_gain

HALL_SIZE = 20


def hall_of_fame(search: Any) -> list[dict[str, Any]]:
    """The best losses per branch, ranked as the search ranks them: failed on a rung last, then highest rung
    reached, then mean AP there; one column of mean AP per rung, and where a rung failed, why. Anchors (the
    default and the named losses) are listed with the rest."""
    rows = []
    for b, evo in search.engines.items():
        for r in evo.best(HALL_SIZE):
            row = {
                "branch": b,
                "text": r.text,
                "infix": "stock torchvision loss" if r.text == DEFAULT else Loss.parse(r.text, b).infix(),
                "named": "default" if r.text == DEFAULT else (name_of(r.text) or ""),
                "mos_score": r.mos_score,
                "rung": r.top_rung,
                "proxy_ap": r.ap,
                "generation": r.generation,
                "failed_at": r.failed_at(),
            }
            for rung in search.rungs:
                row[f"rung{rung.index}_ap"] = r.score(rung.index)
            rows.append(row)
    return rows


def hall_fields(search: Any) -> list[str]:
    rungs = [f"rung{r.index}_ap" for r in search.rungs]
    return [
        "branch",
        "text",
        "infix",
        "named",
        "mos_score",
        "rung",
        "proxy_ap",
        *rungs,
        "generation",
        "failed_at",
    ]


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})
    return buf.getvalue()


def fmt_row(row: dict[str, Any]) -> str:
    """A final-table row's AP: mean ± std over the seeds that finished, and how many failed."""
    failures = row.get("failures", [])
    if row["mean"] is None:
        return f"every training failed ({len(failures)})"
    text = f"{row['mean']:.4f} ± {row['std']:.4f}"
    counts: dict[str, int] = {}
    for f in failures:
        counts[f["status"]] = counts.get(f["status"], 0) + 1
    notes = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    return f"{text} ({notes})" if notes else text


ALPHA_NOTE = (
    "One-stage classification losses (`cls-sigmoid`), `bce` included, are multiplied by focal's α_t "
    "(0.25 on positives, 0.75 on negatives), as torchvision's focal loss is."
)


def final_heading(summary: dict[str, Any]) -> str:
    mult = summary.get("final_multiplier", 1)
    seeds = ", ".join(map(str, summary["seeds"]))
    split = summary.get("split", "val")
    where = "the test split (images no selection saw)" if split == "test" else f"the {split} split"
    what = f"Proxy mAP (COCO AP on {where})"
    if multi_task(summary):
        what = f"Fitness (the mean over the proxy tasks of COCO AP / the default's AP, on {where})"
    return (
        f"{what} at {mult}x the proxy length, on held-out seeds {seeds} "
        "(no selection used them); gains are paired over seeds with a 95 % t interval:"
    )


def multi_task(summary: dict[str, Any]) -> bool:
    """Whether the final table's numbers are multi-task fitness (relative AP) rather than AP."""
    return any(row.get("per_task") for row in summary.get("table", {}).values())


def value_heading(summary: dict[str, Any]) -> str:
    return "fitness mean ± std" if multi_task(summary) else "mAP mean ± std"


def gain_cells(gain: dict[str, Any] | None) -> tuple[str, str]:
    """(gain with its CI, verdict) for a table."""
    if not gain:
        return "—", "—"
    if gain["verdict"] == "cannot tell":
        return "—", f"cannot tell ({gain.get('reason', 'a training failed')})"
    if gain["n"] < 2:
        return f"{gain['mean']:+.4f}", gain["verdict"]
    low, high = gain["ci"]
    return f"{gain['mean']:+.4f} [{low:+.4f}, {high:+.4f}]", gain["verdict"]


def summary_markdown(summary: dict[str, Any]) -> str:
    table = summary["table"]
    lines = [
        final_heading(summary),
        "",
        f"| losses | cls | reg | {value_heading(summary)} | gain vs default [95 % CI] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in table.items():
        gain_s, verdict_s = gain_cells(row.get("vs_default"))
        cls_s, reg_s = short(row["cls"], 200), short(row["reg"], 200)
        lines.append(f"| {label} | `{cls_s}` | `{reg_s}` | {fmt_row(row)} | {gain_s} | {verdict_s} |")
    lines += per_task_lines(table)
    lines += split_lines(summary.get("splits") or {})
    lines += ["", summary.get("verdict") or ""]
    named = best_named_verdict(summary)
    if named:
        lines += ["", named]
    lines += ["", ALPHA_NOTE]
    if summary.get("stopped"):
        lines += ["", f"The generations stopped early: {summary['stopped']}."]
    return "\n".join(lines) + "\n"


def split_lines(splits: dict[str, Any]) -> list[str]:
    """One line per task: its train / search-val / test sizes and how they were made."""
    described = {k: v for k, v in splits.items() if v}
    if not described:
        return []
    lines = ["", "Splits (train / search-val / test images):"]
    for name, d in described.items():
        lines.append(f"- {name}: {d.get('train')} / {d.get('val')} / {d.get('test')} — {d.get('method', '')}")
    return lines


def per_task_lines(table: dict[str, dict[str, Any]]) -> list[str]:
    """With several proxy tasks: each row's own AP per task, its gain over the default there, and the task
    each row does worst on (AP relative to the default's)."""
    names = list(next(iter(table.values())).get("per_task") or {})
    if not names:
        return []
    lines = [
        "",
        "Fitness above is the mean over tasks of AP / the default's AP on that task. Each task's own AP "
        "(mean over the seeds; gain vs default [95 % CI]):",
        "",
        "| losses | " + " | ".join(names) + " | worst task (AP / default's) |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for label, row in table.items():
        cells = []
        for name in names:
            entry = row["per_task"].get(name, {})
            mean = entry.get("mean")
            text = "failed" if mean is None else f"{mean:.4f}"
            gain = entry.get("vs_default")
            if gain and gain["verdict"] != "cannot tell" and gain["n"] > 1:
                text += f" ({gain['mean']:+.4f} [{gain['ci'][0]:+.4f}, {gain['ci'][1]:+.4f}])"
            cells.append(text)
        worst = row.get("worst_task")
        cells.append(f"{worst[0]} ({worst[1]:.3f})" if worst else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def best_named_verdict(summary: dict[str, Any]) -> str | None:
    """One line: the found pair against the best named loss, with its CI and per-seed gains."""
    table = summary["table"]
    gain = table.get("found", {}).get("vs_best_named")
    if gain is None:
        return None
    named = table["best named"]
    which = short(named["cls"]) if named["cls"] != "default" else short(named["reg"])
    per_seed = ", ".join(f"{d:+.4f}" for d in gain["diffs"])
    return f"Found vs the best named loss ({which}): {describe_gain(gain)}; per seed {per_seed}."


def write_outputs(search: Any) -> None:
    failpoint("outputs")
    run = search.run
    rows = hall_of_fame(search)
    run.write_text("hall_of_fame.csv", _csv(rows, hall_fields(search)))
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
