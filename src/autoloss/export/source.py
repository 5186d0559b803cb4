"""What gets exported: the losses of a finished run directory, or one expression.

A run directory's `best/cls.json` and `best/reg.json` hold Loss JSON, or `{"expr": null, "text": "default"}`
where the detector's default loss won; that branch is then exported as nothing (with a comment saying why).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from autoloss.errors import AutolossError
from autoloss.loss import Loss
from autoloss.spaces.branches import BRANCHES, DETECTOR_REG_WEIGHT
from autoloss.spaces.branches import branch as lookup_branch
from autoloss.spaces.named import NAMED

ROLES = ("cls", "reg")
ONE_STAGE = ("fcos", "retinanet")
TWO_STAGE = ("faster_rcnn",)
REG_WEIGHTS = DETECTOR_REG_WEIGHT  # the weight the detector trained a searched reg loss with


class ExportError(AutolossError):
    """Something to export that cannot be read: a missing or incomplete run directory."""


@dataclass(frozen=True)
class Found:
    """One branch's winner. `loss` is None where the detector's default loss won."""

    role: str  # "cls" or "reg"
    branch: str
    loss: Loss | None


@dataclass(frozen=True)
class ExportSource:
    """The losses to export and where they came from (for the generated files' headers)."""

    found: tuple[Found, ...]
    origin: str  # "run directory runs/x" or "expression ..."
    detector: str | None = None  # the proxy detector of a run; None for a single expression
    notes: tuple[str, ...] = field(default=())

    @property
    def losses(self) -> tuple[Found, ...]:
        """The branches that export code (the default won nowhere)."""
        return tuple(f for f in self.found if f.loss is not None)

    def reg_weight(self) -> float:
        return REG_WEIGHTS.get(self.detector or "", 1.0)


def role_of(branch_name: str) -> str:
    return "reg" if lookup_branch(branch_name).name == "reg" else "cls"


def from_expression(text_or_name: str, branch: str | None = None) -> ExportSource:
    """One named loss or prefix expression (branch inferred from its inputs when not given)."""
    loss = Loss.resolve(text_or_name, branch)
    origin = f"named loss {loss.name}" if loss.name else f"expression {loss.text}"
    return ExportSource((Found(role_of(loss.branch), loss.branch, loss),), origin)


def from_run_dir(path: str | Path) -> ExportSource:
    """The found cls and reg losses of a finished run directory."""
    path = Path(path)
    if not path.is_dir():
        raise ExportError(f"run directory {path} does not exist")
    if not (path / "config.yaml").is_file():
        raise ExportError(f"{path} is not an autoloss run directory (no config.yaml)")
    best = path / "best"
    if not best.is_dir():
        raise ExportError(f"{path} has no best/ folder: the search has not finished (resume it first)")
    found = []
    for role in ROLES:
        file = best / f"{role}.json"
        if not file.is_file():
            raise ExportError(f"{file} is missing: the search has not finished (resume it first)")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ExportError(f"{file} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "branch" not in data:
            raise ExportError(f"{file} is not a loss JSON (no 'branch' field)")
        loss = None if data.get("expr") is None else Loss.from_json(data)
        found.append(Found(role, lookup_branch(data["branch"]).name, loss))
    return ExportSource(tuple(found), f"run directory {path}", _detector(path))


def _detector(path: Path) -> str | None:
    from autoloss.runs.rundir import RunDir

    raw = RunDir.open(path).config()
    # Version 4 keeps the detector in the task's settings; earlier versions in the proxy section.
    task = raw.get("task")
    section = task.get("settings") if isinstance(task, dict) else raw.get("proxy")
    detector = section.get("detector") if isinstance(section, dict) else None
    return detector if isinstance(detector, str) else None


def resolve_source(target: str, branch: str | None = None) -> ExportSource:
    """A run directory if `target` is an existing folder, else a named loss or expression."""
    if Path(target).is_dir():
        if branch is not None:
            raise ExportError("--branch applies to an expression, not to a run directory")
        return from_run_dir(target)
    if "(" not in target:
        if "/" in target or "\\" in target or target.startswith("."):
            raise ExportError(f"run directory {target} does not exist")
        inputs = {n for b in BRANCHES.values() for n in b.inputs}
        if target.lower() not in NAMED and target not in inputs:
            raise ExportError(
                f"{target!r} is not a run directory, a named loss ({', '.join(NAMED)}) or an expression"
            )
    return from_expression(target, branch)
