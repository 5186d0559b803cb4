"""PNG plots of a search, drawn from `generations.jsonl` (matplotlib, headless)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from autoloss.evolution.funnel import STAGES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def _by_branch(gens: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for g in gens:
        out.setdefault(g["branch"], []).append(g)
    for rows in out.values():
        rows.sort(key=lambda g: g["generation"])
    return out


def plot_map(gens: list[dict[str, Any]], baseline: float | None, path: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for b, rows in _by_branch(gens).items():
        x = [g["generation"] for g in rows]
        ax.plot(x, [g["best_ap"] or 0 for g in rows], marker="o", label=f"{b}: best so far")
        ax.plot(
            x,
            [statistics.median(g["aps"]) if g["aps"] else 0 for g in rows],
            marker=".",
            linestyle="--",
            label=f"{b}: median of generation",
        )
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label="default losses")
    ax.set_xlabel("generation")
    ax.set_ylabel("proxy mAP")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_funnel(gens: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    groups = _by_branch(gens)
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(5.5 * max(1, len(groups)), 3.6), squeeze=False)
    for ax, (b, rows) in zip(axes[0], groups.items(), strict=False):
        width = 0.8 / len(rows)
        for i, g in enumerate(rows):
            counts = [max(g["counts"].get(s, 0), 0.5) for s in STAGES]  # log scale: keep zeros visible
            ax.bar(
                [j + i * width for j in range(len(STAGES))],
                counts,
                width=width,
                label=f"gen {g['generation']}",
            )
        ax.set_yscale("log")
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(STAGES))], STAGES, fontsize=8)
        ax.set_title(f"funnel, {b}")
        ax.set_ylabel("candidates")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_time(gens: list[dict[str, Any]], path: Path) -> Path:
    plt = _pyplot()
    labels = [f"{g['branch']}:{g['generation']}" for g in gens]
    screen = [g.get("screen_seconds", 0) for g in gens]
    proxy = [g.get("proxy_seconds", 0) for g in gens]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.bar(labels, screen, label="screening (validity, CPV, MOS)")
    ax.bar(labels, proxy, bottom=screen, label="proxy trainings")
    ax.set_ylabel("wall seconds")
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
