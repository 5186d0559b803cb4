"""The final table's rows in the report: how each fared on the search's rungs, and their loss curves.

The rungs are what selection saw (search-val, the rungs' seeds); the final table is what the search claims
(test, held-out seeds); the curves show what the losses do to a detector's outputs, drawn from the same
compiled functions the detector trains with (`autoloss.report.curves`).
"""

from __future__ import annotations

from typing import Any

from autoloss.runs.rundir import RunDir

CURVES_FILE = "curves_{branch}.png"  # beside report.md, one per branch of the final table


def cls_branch_of(summary: dict[str, Any]) -> str:
    """The run's classification branch, from what the summary records about the found pair (older
    summaries: the published row, which is CSE-Autoloss-B for one-stage heads and -A for two-stage)."""
    from autoloss.spaces.named import NAMED, name_of

    novelty = summary.get("found_novelty") or {}
    found = next((b for b in novelty if b != "reg"), None)
    if found is not None:
        return found
    published = name_of(summary["table"].get("published", {}).get("cls", ""))
    return NAMED[published].branch if published else "cls-sigmoid"


def finalist_losses(summary: dict[str, Any], hall: list[dict[str, str]]) -> dict[str, dict[str, list[str]]]:
    """Per branch, the loss texts of the final table's rows with their roles ("default", "published",
    "best named", "found"), and the hall of fame's best new expression ("best new") where it is none of them.

    A row's part that is the stock loss is drawn only for the "default" row, as the named loss that computes
    it (focal with the heads' alpha_t is torchvision's focal loss); a two-stage head's stock reg loss is
    smooth L1 on box deltas, not a function of I, U, E, so it has no curve.
    """
    from autoloss.evolution.engine import DEFAULT
    from autoloss.spaces.named import DEFAULTS, NAMED

    cls_b = cls_branch_of(summary)
    roles: dict[str, dict[str, list[str]]] = {cls_b: {}, "reg": {}}
    for row_label, row in summary["table"].items():
        for b, text in ((cls_b, row["cls"]), ("reg", row["reg"])):
            if text == DEFAULT:
                if row_label != "default" or (b == "reg" and cls_b == "cls-softmax"):
                    continue
                text = NAMED[DEFAULTS[b]].text
            roles[b].setdefault(text, []).append(row_label)
    for b, texts in roles.items():
        new = next(
            (
                r["text"]
                for r in hall
                if r["branch"] == b and r["text"] != DEFAULT and not r.get("named") and not r.get("failed_at")
            ),
            None,
        )
        if new is not None and new not in texts:
            texts[new] = ["best new"]
    return roles


def curve_lines(run: RunDir, summary: dict[str, Any], hall: list[dict[str, str]]) -> list[str]:
    """Draw the finalists' loss curves beside report.md, one PNG per branch; the section that links them."""
    from autoloss.loss import Loss
    from autoloss.report.curve_plots import draw_curves
    from autoloss.report.curves import loss_curves
    from autoloss.spaces.named import label as short

    lines = [
        "## Loss curves of the finalists",
        "",
        "The losses of the final table per branch (and the best new expression of the hall of fame where it "
        "is not in the table), drawn thick where found by the search: the loss (top row) and its gradient "
        "(bottom row), computed with the compiled loss the detector trains with, in float32, gradients by "
        "autograd. cls-sigmoid: against the predicted probability, for a positive at IoU targets Q = 1 and "
        "0.5 and for a negative, every loss × focal's α_t as the one-stage heads apply it. cls-softmax: "
        "against the true class's probability, 80 classes + background with the other logits equal. reg: "
        "a 64 × 64 px target; a shifted and a scaled box against IoU, and a box moving away against the "
        "centre distance, where an enclosing-box term (GIoU) still has a gradient and IoU has none.",
        "",
    ]
    for b, texts in finalist_losses(summary, hall).items():
        if not texts:
            continue
        losses = {f"{', '.join(r)}: {short(text, 40)}": Loss.resolve(text, b) for text, r in texts.items()}
        found = [lab for lab, r in zip(losses, texts.values(), strict=True) if {"found", "best new"} & set(r)]
        name = CURVES_FILE.format(branch=b)
        draw_curves(
            loss_curves(losses), run.path / name, highlight=found, title=f"{b}: the finalists' losses"
        )
        lines += [f"![{b} loss curves]({name})", ""]
        if b == "reg" and cls_branch_of(summary) == "cls-softmax":
            lines += [
                "The two-stage head's stock reg loss (smooth L1 on box deltas) is not a function of I, U, E "
                "and has no curve here.",
                "",
            ]
    return lines


def rung_fitness(
    evaluations: list[dict[str, Any]], pair: tuple[str, str], rung: dict[str, Any]
) -> tuple[float, int, dict[str, int]] | None:
    """(mean fitness over the rung's seeds, seeds trained, {status: count} of those that did not finish)
    of a (cls, reg) pair at a rung, from the search-val trainings; None where it never trained there.

    Fitness as the search scores it (evolution/fitness.py): AP, or with several proxy tasks the mean over
    tasks of AP / the default's mean AP on the same rung's seeds; a seed that did not finish counts 0.
    """
    from autoloss.evolution.engine import DEFAULT
    from autoloss.evolution.fitness import ap_of

    def trained(cls_: str, reg_: str) -> dict[tuple[str, int], dict[str, Any]]:
        return {
            (e.get("task", ""), e["seed"]): e["result"]
            for e in evaluations
            if (e["cls"], e["reg"]) == (cls_, reg_)
            and e.get("multiplier", 1) == rung["multiplier"]
            and e["seed"] in rung["seeds"]
        }

    mine = trained(*pair)
    if not mine:
        return None
    seeds = sorted({s for _, s in mine})
    tasks = sorted({t for t, _ in mine})
    refs = {}
    if tasks != [""]:
        default = trained(DEFAULT, DEFAULT)
        for t in tasks:
            aps = [ap_of(default[(t, s)]) for s in seeds if (t, s) in default]
            if not aps or sum(aps) <= 0:
                return None  # nothing to score relative to, as the search itself could not
            refs[t] = sum(aps) / len(aps)
    scores, broke = [], {}
    for s in seeds:
        results = [mine.get((t, s), {"status": "failed"}) for t in tasks]
        bad = next((r["status"] for r in results if r.get("status") != "ok"), None)
        if bad is not None:
            broke[bad] = broke.get(bad, 0) + 1
            scores.append(0.0)
        elif refs:
            scores.append(sum(ap_of(r) / refs[t] for t, r in zip(tasks, results, strict=True)) / len(tasks))
        else:
            scores.append(ap_of(results[0]))
    return sum(scores) / len(scores), len(seeds), broke


def finalist_rung_lines(run: RunDir, summary: dict[str, Any]) -> list[str]:
    """The final table's rows at every rung of the search: what selection saw of each finalist."""
    from autoloss.evolution.outputs import multi_task

    rungs = summary.get("rungs") or []
    if not rungs:
        return []
    evaluations = [e for e in run.read("evaluations.jsonl") if e.get("split", "val") == "val"]
    what = "fitness (mean over tasks of AP / the default's AP)" if multi_task(summary) else "mAP"
    lines = [
        "## The finalists on the rungs",
        "",
        f"Each row of the final table at each rung of the search: {what} on the search-val split, mean over "
        "the rung's seeds, as selection saw it (a seed that did not finish counts 0). — : the pair was not "
        "trained at that rung (the search trains one branch's loss beside the other's default, and "
        "trains a combination of two found losses only after the generations).",
        "",
        "| losses | "
        + " | ".join(
            f"rung {r['index']} ({r['multiplier']}x, seed{'s' if len(r['seeds']) > 1 else ''} "
            f"{', '.join(map(str, r['seeds']))})"
            for r in rungs
        )
        + " |",
        "|---|" + "---|" * len(rungs),
    ]
    for label, row in summary["table"].items():
        cells = []
        for rung in rungs:
            got = rung_fitness(evaluations, (row["cls"], row["reg"]), rung)
            if got is None:
                cells.append("—")
                continue
            mean, n, broke = got
            notes = [f"{k} {status}" for status, k in sorted(broke.items())]
            if n < len(rung["seeds"]):
                notes.insert(0, f"{n} of {len(rung['seeds'])} seeds")
            cells.append(f"{mean:.4f}" + (f" ({', '.join(notes)})" if notes else ""))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]
