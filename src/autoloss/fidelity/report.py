"""Fidelity results for people: per-task scores of the panel, the agreement table, a scatter plot."""

from __future__ import annotations

import statistics
from typing import Any

from autoloss.fidelity.panel import PanelEntry
from autoloss.fidelity.ranks import noise_ceiling, rank_agreement, tau_over_losses_and_seeds


def scores_by_task(records: list[dict[str, Any]], panel: list[PanelEntry]) -> dict[str, dict[str, Any]]:
    """task -> panel label -> {mean, aps, seeds}: mean COCO AP over seeds (a failed training counts 0)."""
    label_of = {(e.cls, e.reg): e.label for e in panel}
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        label = label_of[(r["cls"], r["reg"])]
        cell = out.setdefault(r["task"], {}).setdefault(label, {"aps": [], "seeds": []})
        cell["aps"].append(r["ap"])
        cell["seeds"].append(r["seed"])
    for task in out.values():
        for cell in task.values():
            cell["mean"] = statistics.fmean(cell["aps"])
    return out


def agreement_table(proxy: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    """Rank agreement of two tasks' scores over the labels both have."""
    labels = [k for k in proxy if k in target]
    return {
        "labels": labels,
        **rank_agreement([proxy[k]["mean"] for k in labels], [target[k]["mean"] for k in labels]),
        "kendall_tau_ci_seeds": tau_over_losses_and_seeds(
            [proxy[k]["aps"] for k in labels], [target[k]["aps"] for k in labels]
        ),
        "target_ceiling": noise_ceiling([target[k]["aps"] for k in labels]),
    }


def agreement_rows(
    scores: dict[str, dict[str, Any]], proxies: list[str], targets: list[str]
) -> list[dict[str, Any]]:
    return [
        {"proxy": p, "target": t, **agreement_table(scores[p], scores[t])} for p in proxies for t in targets
    ]


def _interval(value: float, ci: tuple[float, float] | list[float]) -> str:
    lo, hi = ci
    if lo != lo:  # NaN: too few losses for a bootstrap
        return f"{value:+.2f}"
    return f"{value:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def markdown(
    scores: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    panel: list[PanelEntry],
    tasks: list[str],
) -> str:
    """The agreement table, then every loss's mean AP on every task."""
    lines = [
        "| proxy | target | losses | Kendall τ [95 % CI] | τ CI over losses and seeds "
        "| target's noise ceiling | Spearman ρ [95 % CI] | proxy's best in target's top 3 | top-3 overlap |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        seeds_ci = r.get("kendall_tau_ci_seeds", (float("nan"),) * 2)
        ceiling = r.get("target_ceiling", float("nan"))
        lines.append(
            f"| {r['proxy']} | {r['target']} | {r['n']} | "
            f"{_interval(r['kendall_tau'], r['kendall_tau_ci'])} | "
            f"{'—' if seeds_ci[0] != seeds_ci[0] else f'[{seeds_ci[0]:+.2f}, {seeds_ci[1]:+.2f}]'} | "
            f"{'— (one seed)' if ceiling != ceiling else f'{ceiling:+.2f}'} | "
            f"{_interval(r['spearman_rho'], r['spearman_rho_ci'])} | "
            f"{'yes' if r['top1_in_target_top3'] else 'no'} | {r['top3_overlap']:.2f} |"
        )
    lines += ["", "| loss | cls | reg | " + " | ".join(tasks) + " |", "|---|---|---|" + "---|" * len(tasks)]
    for e in panel:
        cells = []
        for t in tasks:
            cell = scores.get(t, {}).get(e.label)
            cells.append(f"{cell['mean']:.4f}" if cell else "—")
        # The expression each entry trains, in full: a label is a name, the text is what was trained.
        lines.append(f"| {e.label} | `{_trained(e.cls)}` | `{_trained(e.reg)}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "mAP is COCO AP on each proxy's search-val split and each target's test split (tasks marked @test), "
        "the mean over seeds; a training that diverged or failed counts 0. τ and ρ intervals: paired "
        "bootstrap over the panel's losses (2,000 resamples); the second τ interval also resamples each "
        "task's seeds. The noise ceiling is τ between the target's ranking on one part of its seeds and on "
        "the rest (mean over the ways to split them): a proxy cannot be expected to agree with a target "
        "better than that. One-stage classification losses, `bce` included, are multiplied by focal's α_t.",
    ]
    return "\n".join(lines) + "\n"


def _trained(text: str) -> str:
    """A panel entry's loss as trained: "default", a named loss's name and expression, or the expression."""
    from autoloss.spaces.named import name_of

    name = name_of(text) if text != "default" else None
    return f"{name}: {text}" if name else text


def scatter_plot(scores: dict[str, dict[str, Any]], rows: list[dict[str, Any]], path) -> None:
    """One panel per (proxy, target): each loss's proxy mAP against its target mAP."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(rows))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.8), squeeze=False)
    for ax, r in zip(axes[0], rows, strict=False):
        labels = r["labels"]
        xs = [scores[r["proxy"]][k]["mean"] for k in labels]
        ys = [scores[r["target"]][k]["mean"] for k in labels]
        ax.scatter(xs, ys, s=18)
        for k, x, y in zip(labels, xs, ys, strict=True):
            ax.annotate(k, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_xlabel(f"proxy mAP: {r['proxy']}", fontsize=7)
        ax.set_ylabel(f"target mAP: {r['target']}", fontsize=7)
        ax.set_title(f"τ = {r['kendall_tau']:+.2f}, ρ = {r['spearman_rho']:+.2f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
