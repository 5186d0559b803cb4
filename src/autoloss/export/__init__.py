"""Take found losses home: standalone PyTorch code, MMDetection 3.x modules, LaTeX and JSON.

    >>> from autoloss.export import export
    >>> code = export("runs/x", "torch")              # both losses of a finished search
    >>> code = export("cse-a-reg", "mmdet")           # one named loss or expression

Generating code imports neither torch nor MMDetection; the generated Python needs only torch.
"""

from __future__ import annotations

from pathlib import Path

from autoloss.export.source import (
    ExportError,
    ExportSource,
    Found,
    from_expression,
    from_run_dir,
    resolve_source,
)
from autoloss.loss import Loss

FORMATS = ("torch", "mmdet", "latex", "json")


def _source(target: str | Path | Loss | ExportSource, branch: str | None) -> ExportSource:
    if isinstance(target, ExportSource):
        return target
    if isinstance(target, Loss):
        from autoloss.export.source import role_of

        origin = f"named loss {target.name}" if target.name else f"expression {target.text}"
        return ExportSource((Found(role_of(target.branch), target.branch, target),), origin)
    if isinstance(target, Path):
        return from_run_dir(target)
    return resolve_source(target, branch)


def export(
    target: str | Path | Loss | ExportSource,
    fmt: str = "torch",
    *,
    branch: str | None = None,
    prefix: str = "Searched",
    module: str = "autoloss_losses",
) -> str:
    """The text of `target` in format `fmt` (one of FORMATS).

    `target` is a run directory (its found cls and reg losses), a named loss or prefix expression (with
    `branch` where the inputs do not decide it), or a `Loss`. `prefix` starts the generated class names
    (`SearchedClsLoss`, `SearchedRegLoss`); `module` is the import name the MMDetection config snippet uses.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; formats: {', '.join(FORMATS)}")
    if not prefix.isidentifier():
        raise ExportError(f"class name prefix {prefix!r} is not a Python identifier")
    src = _source(target, branch)
    if fmt == "torch":
        from autoloss.export.torch_format import torch_source

        return torch_source(src, prefix)
    if fmt == "mmdet":
        from autoloss.export.mmdet_format import mmdet_source

        return mmdet_source(src, prefix, module)
    if fmt == "latex":
        from autoloss.export.text_formats import latex_source

        return latex_source(src)
    from autoloss.export.text_formats import json_source

    return json_source(src)


__all__ = [
    "FORMATS",
    "ExportError",
    "ExportSource",
    "Found",
    "export",
    "from_expression",
    "from_run_dir",
    "resolve_source",
]
