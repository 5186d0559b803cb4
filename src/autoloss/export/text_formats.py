"""`--format latex` and `--format json`: the formulas for a paper, the expressions for a program."""

from __future__ import annotations

import json
from typing import Any

from autoloss.export.source import ExportSource
from autoloss.spaces.named import DEFAULTS

JSON_VERSION = 1


def latex_source(src: ExportSource) -> str:
    """One `equation` per found loss, with the prefix expression and origin as LaTeX comments."""
    out = [f"% Losses exported by autoloss ({src.origin})."]
    for f in src.found:
        if f.loss is None:
            default = DEFAULTS.get(f.branch)
            out.append(f"% {f.role} ({f.branch}): the detector's default loss ({default}) won the search.")
            continue
        out += [
            f"% {f.role} ({f.branch}){': ' + f.loss.name if f.loss.name else ''}",
            f"% {f.loss.text}",
            "\\begin{equation}",
            f"  L_{{\\mathrm{{{f.role}}}}} = {f.loss.latex()}",
            "\\end{equation}",
        ]
    return "\n".join(out) + "\n"


def json_data(src: ExportSource) -> dict[str, Any]:
    """A single expression: its Loss JSON (`Loss.from_json` reads it back). A run directory: both branches,
    each a Loss JSON or `{"branch": ..., "expr": null, "text": "default"}` where the default won."""
    if src.detector is None and len(src.found) == 1 and src.found[0].loss is not None:
        return src.found[0].loss.to_json()
    data: dict[str, Any] = {"version": JSON_VERSION, "source": src.origin, "detector": src.detector}
    for f in src.found:
        data[f.role] = f.loss.to_json() if f.loss else {"branch": f.branch, "expr": None, "text": "default"}
    return data


def json_source(src: ExportSource) -> str:
    return json.dumps(json_data(src), indent=2) + "\n"
