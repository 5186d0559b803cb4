"""autoloss: discover loss functions for object detectors (the CSE-Autoloss method).

The stable public API:

- `Loss`: a loss expression bound to its branch (parse, name, JSON, infix, LaTeX, call on tensors);
- `check(loss)`: the cheap filters' verdicts (validity, dedup, CPV, MOS) for one loss;
- `search(out, budget=..., **sections)`: run a search into a run directory and return its summary;
- `autoloss.detection.build_detector(...)`: a torchvision detector with searched losses in its heads;
- `autoloss.export.export(target, fmt)`: found losses as PyTorch / MMDetection code, LaTeX or JSON;
- `plot_loss_curves(losses, path, vs=...)`: a figure of losses and their gradients as the detector sees them.

Importing the package is cheap: torch and sympy load when a loss is first evaluated, checked or printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from autoloss.errors import AutolossError, ExprError
from autoloss.loss import Loss
from autoloss.spaces.branches import branch as lookup_branch

if TYPE_CHECKING:
    from autoloss.checks import CheckConfig, ScreenResult

__all__ = ["AutolossError", "ExprError", "Loss", "check", "plot_loss_curves", "search"]
__version__ = "0.1.0"


def check(
    loss: Loss | str,
    branch: str | None = None,
    *,
    config: CheckConfig | dict[str, Any] | None = None,
    cpv: bool = True,
    mos: bool = True,
) -> ScreenResult:
    """Run the filters on one loss and return their verdicts (`ScreenResult`: `passed`, `stage`, `reason`,
    `verdicts`, `mos_score`).

    `loss` is a `Loss`, a named loss or a prefix expression (with `branch` where its inputs do not decide
    it). `cpv=False` / `mos=False` skip those filters; `config` overrides the filters' settings.
    """
    if isinstance(loss, str):
        loss = Loss.resolve(loss, branch)
    elif branch is not None and lookup_branch(branch).name != loss.branch:
        raise ExprError(f"{loss.text} is a {loss.branch} loss, not {lookup_branch(branch).name}")
    from autoloss.checks import screen

    return screen(loss, config, cpv=cpv, mos=mos)


def search(
    out: str | Path | None = None,
    *,
    budget: str = "default",
    task: Any = None,
    overwrite: bool = False,
    progress: Any = None,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    """Run a CSE-Autoloss search into run directory `out` and return its summary.

    `budget` is a preset ("smoke", "default", ...); `sections` override parts of its config, e.g.
    `search("runs/x", budget="smoke", evolution={"generations": 1}, backend={"backend": "serial"})`.
    `task` is the proxy task: "detection" (the default), your own as "module:function" or
    "path/to/file.py:function", or the factory function itself (see `autoloss.tasks`).
    The found losses land in `out/best/` (see `autoloss.export`). The machinery is `autoloss.evolution`.
    """
    from autoloss.evolution.api import search as run_search

    return run_search(out, budget=budget, task=task, overwrite=overwrite, progress=progress, **sections)


def plot_loss_curves(losses: Any, path: str | Path, vs: Any = None, **options: Any) -> Path:
    """Draw the curves of `losses` (Loss objects, named losses or prefix expressions, all of one branch; a
    dict gives them legend labels) beside named losses into `path` (.png, .pdf, .svg, ...) and return it.

    Each column is one family of inputs, the loss on top and its gradient below, computed with the compiled
    loss in float32 as the detector's heads call it (cls-sigmoid losses times focal's alpha_t). `vs` names
    the losses to compare with (default: the branch's named losses; `["none"]`: none); `options` are those
    of `autoloss.report.curve_plots.plot_loss_curves` (branch, points, qualities, classes, box, title).
    The numbers without a figure: `autoloss.report.curves.loss_curves`.
    """
    from autoloss.report.curve_plots import plot_loss_curves as plot

    return plot(losses, path, vs, **options)
