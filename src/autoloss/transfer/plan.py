"""What a transfer evaluation trains: every (detector, dataset) cell with the given losses, the detector
defaults, the published CSE-Autoloss losses of the matching branch and (by default) each named loss of
the branch — the honest baselines: a short proxy favours losses that train fast, so a found loss must beat
the best named loss, not only the default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoloss.data_specs import data_names, is_known_data
from autoloss.errors import AutolossError
from autoloss.spaces.branches import DETECTOR_CLS_BRANCH as DETECTOR_BRANCH
from autoloss.spaces.named import DEFAULTS, NAMED, PUBLISHED


class TransferError(AutolossError):
    """Transfer settings that cannot work."""


@dataclass(frozen=True)
class Row:
    label: str
    cls: str
    reg: str


@dataclass
class TransferPlan:
    detectors: list[str]
    datasets: list[str]
    seeds: list[int]
    rows: dict[str, list[Row]] = field(default_factory=dict)  # detector -> rows

    def cells(self) -> list[tuple[str, str]]:
        return [(d, data) for d in self.detectors for data in self.datasets]

    def trainings(self) -> int:
        return sum(len(self.rows[d]) for d, _ in self.cells()) * len(self.seeds)


def plan_transfer(
    cls_loss: str | None,
    reg_loss: str | None,
    detectors: list[str],
    datasets: list[str],
    seeds: int,
    named: bool = True,
    first_seed: int = 0,
) -> TransferPlan:
    """Validate the request and list what each detector trains, on seeds `first_seed`, `first_seed` + 1, ...
    Raises `TransferError` with the fix."""
    from autoloss.loss import Loss

    if not detectors:
        raise TransferError("--detectors is empty")
    for d in detectors:
        if d not in DETECTOR_BRANCH:
            raise TransferError(f"unknown detector {d!r}; detectors: {', '.join(DETECTOR_BRANCH)}")
    for data in datasets:
        if not is_known_data(data):
            raise TransferError(
                f"dataset {data!r} is neither a dataset name ({data_names()}) nor an existing COCO JSON file"
            )
    if seeds < 1:
        raise TransferError(f"--seeds must be positive, got {seeds}")
    found_cls = Loss.resolve(cls_loss) if cls_loss not in (None, "default") else None
    found_reg = Loss.resolve(reg_loss, "reg") if reg_loss not in (None, "default") else None
    if found_cls is not None and found_cls.branch == "reg":
        raise TransferError(f"--cls-loss {cls_loss!r} is a regression loss")
    plan = TransferPlan(list(detectors), list(datasets), list(range(first_seed, first_seed + seeds)))
    for d in detectors:
        branch = DETECTOR_BRANCH[d]
        if found_cls is not None and found_cls.branch != branch:
            raise TransferError(
                f"{d} needs a {branch} classification loss, but --cls-loss is {found_cls.branch}: one-stage "
                "detectors (fcos, retinanet) take cls-sigmoid losses, two-stage (faster_rcnn) cls-softmax; "
                "drop the detector or give a loss of its branch"
            )
        pub_cls, pub_reg = PUBLISHED[branch]
        rows = [
            Row("default", "default", "default"),
            Row("published", NAMED[pub_cls].text, NAMED[pub_reg].text),
        ]
        if found_cls is not None or found_reg is not None:
            rows.append(
                Row(
                    "found",
                    found_cls.text if found_cls else "default",
                    found_reg.text if found_reg else "default",
                )
            )
        if named:
            for n in NAMED.values():
                if n.name == DEFAULTS.get(n.branch) or n.name.startswith("cse-"):
                    continue  # the default and the published losses already have rows
                if n.branch == branch:
                    rows.append(Row(n.name, n.text, "default"))
                elif n.branch == "reg":
                    rows.append(Row(n.name, "default", n.text))
        plan.rows[d] = unique_pairs(rows)
    return plan


def seeds_after_run(run_dir: str | Path) -> int:
    """The first seed above every seed a search run trained with (its rungs', which chose the found losses,
    and its final's): a transfer of what it found is then trained on seeds no choice was made on."""
    from autoloss.evolution.config import ConfigError, SearchConfig
    from autoloss.evolution.rungs import held_out_seeds, ladder
    from autoloss.runs.rundir import RunDir, RunDirError

    try:  # read as `resume` reads a run's config
        ev = SearchConfig.from_dict(RunDir.open(run_dir).config()).evolution
    except (RunDirError, ConfigError) as exc:
        raise TransferError(str(exc)) from None
    rungs = ladder(ev.rungs, ev.seed)
    used = [s for r in rungs for s in r.seeds] + held_out_seeds(rungs, ev.final_seeds)
    return max(used) + 1


def unique_pairs(rows: list[Any]) -> list[Any]:
    """One row per distinct (cls, reg) pair of losses (rows of any type with those attributes); the first
    label wins (a found loss that equals a named one stays "found")."""
    seen: set[tuple[str, str]] = set()
    out = []
    for r in rows:
        if (r.cls, r.reg) not in seen:
            seen.add((r.cls, r.reg))
            out.append(r)
    return out
