"""Loss-curve figures: the numbers of `autoloss.report.curves` drawn with matplotlib (headless).

One figure per branch: one column per family of inputs (a positive at each IoU target and a negative;
each Z; a shifted, a scaled and a receding box), the loss in the top row and its gradient below. The losses
asked about are drawn thick and solid, the ones they are compared with thin and dashed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoloss.report.curves import BOX, CLASSES, POINTS, QUALITIES, BranchCurves, CurveError, loss_curves
from autoloss.report.plots import _pyplot

NO_COMPARISON = "none"  # `vs=["none"]`: draw only the given losses


def plot_loss_curves(
    losses: Sequence[Any] | Mapping[str, Any],
    path: str | Path,
    vs: Sequence[str] | None = None,
    *,
    branch: str | None = None,
    points: int = POINTS,
    qualities: Sequence[float] = QUALITIES,
    classes: int = CLASSES,
    box: float = BOX,
    title: str | None = None,
) -> Path:
    """Draw the loss curves of `losses` (Loss objects, named losses or prefix expressions, all of one
    branch; a mapping gives them legend labels) beside the comparison losses into `path` (its suffix
    picks the format: .png, .pdf, .svg, ...), and return the path.

    `vs`: the named losses to compare with (default: every named loss of the branch; `["none"]`: none).
    `qualities`: the IoU targets Q (cls-sigmoid positives) or Z (cls-softmax) to draw.
    """
    path = Path(path)
    check_suffix(path)
    given = _given(losses, branch)
    compare = comparison(next(iter(given.values())).branch, vs)
    # a loss both asked about and compared with is drawn once, as asked about
    compared = {
        label: loss for label, loss in compare.items() if label not in given and loss not in given.values()
    }
    curves = loss_curves({**given, **compared}, points=points, qualities=qualities, classes=classes, box=box)
    return draw_curves(curves, path, highlight=list(given), title=title)


def check_suffix(path: Path) -> None:
    """Refuse a file name whose suffix matplotlib cannot write, before any work is done."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise CurveError(
            f"cannot write a figure to {str(path)!r}: "
            + (f"matplotlib does not write .{suffix} files" if suffix else "the file name has no suffix")
            + f"; use one of {', '.join('.' + f for f in sorted(formats))}"
        )


def comparison(branch: str, vs: Sequence[str] | None) -> dict[str, Any]:
    """The named losses to compare with, by name: `vs`, or every named loss of `branch`."""
    from autoloss.loss import Loss
    from autoloss.spaces.named import NAMED

    if vs is None:
        return {n.name: Loss.named(n.name) for n in NAMED.values() if n.branch == branch}
    names = [v.strip().lower() for v in vs]
    if names == [NO_COMPARISON]:
        return {}
    out = {}
    for name in names:
        entry = NAMED.get(name)
        if entry is None:
            raise CurveError(
                f"--vs {name!r} is not a named loss; {branch} has "
                + ", ".join(n.name for n in NAMED.values() if n.branch == branch)
                + f" ('{NO_COMPARISON}' for none)"
            )
        if entry.branch != branch:
            raise CurveError(
                f"--vs {name}: {name} is a {entry.branch} loss, but the losses drawn are {branch}"
            )
        out[name] = Loss.named(name)
    return out


def _given(losses: Sequence[Any] | Mapping[str, Any], branch: str | None) -> dict[str, Any]:
    """Label -> Loss for the losses asked about; text and names are resolved (in `branch` if given)."""
    from autoloss.loss import Loss
    from autoloss.spaces.named import label as short

    items = list(losses.items()) if isinstance(losses, Mapping) else [(None, x) for x in losses]
    if not items:
        raise CurveError("no losses to draw")
    out: dict[str, Any] = {}
    for label, loss in items:
        if isinstance(loss, str):
            loss = Loss.resolve(loss, branch)
        if label is None:
            label = getattr(loss, "name", None) or short(loss.text, 48)
        if loss not in out.values():
            out[label] = loss
    branches = {loss.branch for loss in out.values()}
    if len(branches) > 1:
        raise CurveError(
            "the losses of one figure must share a branch; got "
            + ", ".join(f"{label} ({loss.branch})" for label, loss in out.items())
        )
    return out


def draw_curves(
    curves: BranchCurves,
    path: str | Path,
    highlight: Sequence[str] = (),
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Draw `curves` into `path`: the loss (top row) and gradient (bottom row) of every case (column)."""
    plt = _pyplot()
    path = Path(path)
    cases = curves.cases
    labels = list(cases[0].values)
    fig, axes = plt.subplots(
        2, len(cases), figsize=(4.4 * len(cases), 7.0), squeeze=False, sharex="col", layout="constrained"
    )
    for col, case in enumerate(cases):
        top, bottom = axes[0][col], axes[1][col]
        for i, label in enumerate(labels):
            style = {"color": f"C{i % 10}", "label": label}
            if label in highlight:
                style.update(linewidth=2.2)
            else:
                style.update(linewidth=1.2, linestyle="--")
            top.plot(case.x, _finite(case.values[label]), **style)
            bottom.plot(case.x, _finite(case.grads[label]), **style)
        for mark in case.marks:
            for ax in (top, bottom):
                ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
        bottom.axhline(0, color="grey", linewidth=0.6)
        marked = "\n(dotted: the boxes stop overlapping)" if case.marks else ""
        top.set_title(case.title + marked, fontsize=10)
        top.set_ylabel("loss")
        bottom.set_ylabel(case.grad_label, fontsize=8)
        bottom.set_xlabel(case.xlabel)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title or f"{curves.branch} loss curves (float32, gradients by autograd)", fontsize=11)
    fig.text(0.5, -0.01, curves.note, ha="center", va="top", fontsize=8, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _finite(values: np.ndarray) -> np.ndarray:
    """Non-finite values as gaps: a loss that is NaN or infinite somewhere is drawn where it is finite."""
    return np.where(np.isfinite(values), values, np.nan)
