"""autoloss: discover loss functions for object detectors (the CSE-Autoloss method).

The stable public API:

- `Loss`: a loss expression bound to its branch (parse, name, JSON, infix, LaTeX, call on tensors);
- `check(loss)`: the cheap filters' verdicts (validity, dedup, CPV, MOS) for one loss;
- `search(out, budget=..., **sections)`: run a search into a run directory and return its summary;
- `autoloss.detection.build_detector(...)`: a torchvision detector with searched losses in its heads;
- `autoloss.export.export(target, fmt)`: found losses as PyTorch / MMDetection code, LaTeX or JSON.

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

__all__ = ["AutolossError", "ExprError", "Loss", "check", "search"]
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
