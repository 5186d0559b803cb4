"""TensorBoard event files for a search: `<run>/tensorboard/`, read with `tensorboard --logdir <run>`.

One TensorBoard run per searched branch (`tensorboard/cls-sigmoid`, `tensorboard/reg`, ...), its step the
generation: funnel counts per stage, best and median fitness per rung, the best so far, what the generation
spent (trainings, proxy-length trainings, iterations, seconds) and the default loss's AP per proxy task. One
run for the trainings (`tensorboard/trainings`), its step the training's line in `evaluations.jsonl`: each
finished training's AP and wall time.

`SearchBoard` is a listener of the search's progress events, so it writes in the main process whatever the
backend, and only observes: it reads what the search journaled and never changes it. A training is written
once it is journaled, a generation once its unit is checkpointed. Every step comes from the journals (a
generation number, a journal line), so a resumed search writes old data at its old steps, never at new
ones. After each flush `tensorboard/written.json` records how far the event files go; a resumed search
opens each writer with `purge_step` at that mark, so what a killed search wrote past it is hidden by
TensorBoard and written again from the journals, once. A failed write (a full disk) stops TensorBoard with
a warning, never the search.

TensorBoard is an optional extra (`pip install 'autoloss[tensorboard]'`): `summary_writer_class` raises
`TensorBoardMissing` naming it.
"""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoloss.errors import AutolossError
from autoloss.evolution.driver import pair_of
from autoloss.evolution.funnel import STAGES
from autoloss.evolution.proxy import EVALUATIONS
from autoloss.runs.rundir import RunDir

FOLDER = "tensorboard"
MARK = "written.json"
TRAININGS = "trainings"
GENERATIONS = "generations.jsonl"
INSTALL = "pip install 'autoloss[tensorboard]'"


class TensorBoardMissing(AutolossError):
    """TensorBoard was asked for and its package is not installed."""


class TensorBoardWarning(UserWarning):
    """Writing TensorBoard failed; the search goes on without it."""


def summary_writer_class() -> type:
    """torch's `SummaryWriter`, or `TensorBoardMissing` naming the extra that installs it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TensorBoardMissing(
            f"TensorBoard logging needs the tensorboard package, an optional extra: {INSTALL}"
        ) from None
    return SummaryWriter


def available() -> bool:
    try:
        summary_writer_class()
    except TensorBoardMissing:
        return False
    return True


LEADER_CURVES = 3  # leaders drawn per generation: more lines than this stop being readable
LEADER_DPI = 60  # a TensorBoard image, not a figure to print: drawing is most of its cost


class LeaderCurves:
    """The branch's current leaders (`leaders`, best first: {"text": the loss, ...}) drawn beside the
    branch's default loss as an image, tag `curves/leaders`, at the generation where the leaders last
    changed: how the best losses so far treat easy and hard examples, as `autoloss show --plot` draws them
    (report/curve_plots.py). A figure costs seconds, so generations that keep their leaders add none."""

    def __init__(self) -> None:
        self._drawn: dict[str, tuple[str, ...]] = {}  # branch -> the leaders last drawn

    def __call__(self, writer: Any, branch: str, generation: int, leaders: list[dict[str, Any]]) -> None:
        texts = tuple(leader["text"] for leader in leaders[:LEADER_CURVES])
        if not texts or self._drawn.get(branch) == texts:
            return
        import tempfile

        import numpy as np
        from PIL import Image

        from autoloss.loss import Loss
        from autoloss.report.curve_plots import comparison, draw_curves
        from autoloss.report.curves import loss_curves
        from autoloss.spaces.named import DEFAULTS

        given: dict[str, Any] = {}
        for rank, text in enumerate(texts, 1):
            # the stock loss leads as "default": drawn as the named loss it is
            given[f"#{rank} {text}"] = Loss.resolve(DEFAULTS[branch] if text == "default" else text, branch)
        curves = loss_curves({**given, **comparison(branch, [DEFAULTS[branch]])}, points=61)
        with tempfile.TemporaryDirectory(prefix="autoloss-tb-") as tmp:
            title = f"{branch}: the leaders after generation {generation} (thick) and the default"
            path = draw_curves(curves, Path(tmp) / "leaders.png", list(given), title, dpi=LEADER_DPI)
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        writer.add_image("curves/leaders", pixels, generation, dataformats="HWC")
        self._drawn[branch] = texts


@dataclass(frozen=True)
class SearchShape:
    """What the scalars need of a search's config: its rungs and its proxy tasks."""

    rungs: list[tuple[int, tuple[int, ...]]]  # (length multiplier, seeds) per rung
    tasks: list[tuple[str, int | None]]  # (label, rung-0 iterations or None for epochs); "" labels one task

    @classmethod
    def of(cls, config: dict[str, Any]) -> SearchShape:
        from autoloss.evolution.config import SearchConfig
        from autoloss.evolution.proxy import sub_tasks
        from autoloss.evolution.rungs import ladder

        cfg = SearchConfig.from_dict(config)
        rungs = [(r.multiplier, r.seeds) for r in ladder(cfg.evolution.rungs, cfg.evolution.seed)]
        return cls(rungs, [(t.label, t.schedule.iterations) for t in sub_tasks(cfg)])


def training_scalars(record: dict[str, Any]) -> dict[str, float]:
    """Tags of one journaled training: its AP (search-val, or `test_ap` for the final's test split) when it
    finished well, and its wall time; per task where the search has several."""
    result = record.get("result") or {}
    suffix = f"/{record['task']}" if record.get("task") else ""
    split = record.get("split", "val")
    out = {f"training/seconds{suffix}": float(result.get("seconds") or 0.0)}
    ap = (result.get("metrics") or {}).get("AP")
    if result.get("status") == "ok" and ap is not None:
        out[f"training/{'ap' if split == 'val' else f'{split}_ap'}{suffix}"] = float(ap)
    return out


def default_aps(records: list[dict[str, Any]], shape: SearchShape) -> dict[str, float]:
    """The default losses' rung-0 search-val AP per task label, the mean over the rung's seeds that
    finished well."""
    multiplier, seeds = shape.rungs[0]
    aps: dict[str, list[float]] = {}
    for r in records:
        res = r.get("result") or {}
        if (r.get("cls"), r.get("reg")) != ("default", "default") or r.get("split", "val") != "val":
            continue
        if r.get("multiplier", 1) != multiplier or r.get("seed") not in seeds or res.get("status") != "ok":
            continue
        aps.setdefault(r.get("task", ""), []).append(float(res.get("metrics", {}).get("AP", 0.0)))
    return {task: statistics.fmean(v) for task, v in aps.items() if v}


def generation_scalars(
    gen: dict[str, Any], shape: SearchShape, defaults: dict[str, float]
) -> dict[str, float]:
    """Tags of one generation of a branch (its `generations.jsonl` line): funnel counts, fitness per rung,
    the best so far, what it spent, and the default's AP per task (`default_aps`)."""
    out = {f"funnel/{stage}": float(gen["counts"].get(stage, 0)) for stage in STAGES}
    per_rung: dict[int, list[float]] = {0: [float(a) for a in gen.get("aps", [])]}
    for p in gen.get("promoted", []):
        if p.get("score") is not None:
            per_rung.setdefault(int(p["rung"]), []).append(float(p["score"]))
    for rung, scores in sorted(per_rung.items()):
        if scores:
            out[f"fitness/rung{rung}_best"] = max(scores)
            out[f"fitness/rung{rung}_median"] = statistics.median(scores)
    if gen.get("best_ap") is not None:
        out["fitness/best_so_far"] = float(gen["best_ap"])
        out["fitness/best_so_far_rung"] = float(gen["best_rung"])
    if len(shape.tasks) == 1 and "" in defaults:
        out["fitness/default_rung0"] = defaults[""]  # one task: fitness is AP
    elif len(shape.tasks) > 1 and defaults:
        out["fitness/default_rung0"] = 1.0  # several: fitness is AP relative to the default's
    for label, ap in defaults.items():
        out["default/ap" + (f"/{label}" if label else "")] = ap
    # What the generation asked for, as the budget counts it: every seed of every rung, on every task.
    multiplier0, seeds0 = shape.rungs[0]
    runs = [(multiplier0, len(seeds0))] * len(gen.get("aps", []))
    runs += [(int(p["multiplier"]), len(p["seeds"])) for p in gen.get("promoted", [])]
    n_tasks = len(shape.tasks)
    out["spent/trainings"] = float(sum(s for _, s in runs) * n_tasks)
    out["spent/proxy_lengths"] = float(sum(m * s for m, s in runs) * n_tasks)
    if all(iterations is not None for _, iterations in shape.tasks):
        per_length = sum(iterations or 0 for _, iterations in shape.tasks)
        out["spent/iterations"] = float(sum(m * s for m, s in runs) * per_length)
    for key in ("screen_seconds", "proxy_seconds"):
        if gen.get(key) is not None:
            out[f"spent/{key}"] = float(gen[key])
    return out


def leaders_of(gen: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The generation's leaders (the parents it chose: the branch's best, best first) with their trainings."""
    out = []
    for text in gen.get("parents", []):
        cls_, reg = pair_of(gen["branch"], text)
        mine = [r for r in records if r.get("cls") == cls_ and r.get("reg") == reg]
        out.append({"text": text, "cls": cls_, "reg": reg, "trainings": mine})
    return out


class SearchBoard:
    """A progress listener (`Search(progress=...)`) that writes a search's TensorBoard event files.

    `leaders` is the hook for the leaders' loss curves (`LeaderCurves`)."""

    def __init__(self, leaders: Callable[[Any, str, int, list[dict[str, Any]]], None] | None = None):
        self._writer_class = summary_writer_class()
        self._leaders = leaders if leaders is not None else LeaderCurves()
        self.folder: Path | None = None
        self.stopped: str | None = None  # why writing stopped, if it did
        self._run: RunDir | None = None
        self._shape: SearchShape | None = None
        self._writers: dict[str, Any] = {}
        self._records: list[dict[str, Any]] = []  # evaluations.jsonl as far as written
        self._generations: dict[str, int] = {}  # branch -> the next generation to write
        self._purge: dict[str, int] = {}  # writer name -> its purge step (a resumed search)

    def __call__(self, event: dict[str, Any]) -> None:
        if self.stopped is not None:
            return
        try:
            self._observe(event)
        except Exception as exc:  # only observing: the search must not stop for its charts
            self.stopped = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"TensorBoard writing stopped ({self.stopped}); the search goes on without it",
                TensorBoardWarning,
                stacklevel=2,
            )
            self._close_writers()

    def close(self) -> None:
        if self.folder is not None and self.stopped is None:
            self._commit()
        self._close_writers()

    # --- events ---------------------------------------------------------------------------------
    def _observe(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            self._open(Path(event["run"]), event.get("completed", []))
        elif self.folder is None:
            return
        elif kind == "proxy-done":
            self._training({k: v for k, v in event.items() if k != "type"})
            self._writer(TRAININGS).flush()
        elif kind == "unit-done":
            self._unit(event["unit"])
            self._commit()

    def _open(self, path: Path, completed: list[str]) -> None:
        """Start (or resume) the event files: purge what went past the mark, then catch up with the
        journals: trainings and finished generations the event files do not have yet."""
        self._close_writers()
        self._run = RunDir(path)
        self.folder = path / FOLDER
        self._shape = SearchShape.of(self._run.config())
        mark = self._read_mark()
        records = self._run.read(EVALUATIONS)
        written = min(int(mark.get("trainings", 0)), len(records))
        self._generations = {str(b): int(g) for b, g in (mark.get("generations") or {}).items()}
        self._purge = {TRAININGS: written, **self._generations}
        _after_older_files(self.folder)
        self._records = records[:written]
        for record in records[written:]:
            self._training(record)
        for unit in completed:
            self._unit(unit)
        self._commit()

    def _training(self, record: dict[str, Any]) -> None:
        step = len(self._records)
        self._records.append(record)
        walltime = (record.get("result") or {}).get("finished_at")
        writer = self._writer(TRAININGS)
        for tag, value in training_scalars(record).items():
            writer.add_scalar(tag, value, global_step=step, walltime=walltime)

    def _unit(self, unit: str) -> None:
        """A finished unit: a generation's line is final once its unit is checkpointed."""
        branch, sep, gen = unit.rpartition(":")
        if not sep or not gen.isdigit() or int(gen) < self._generations.get(branch, 0):
            return  # baseline, combine, final; or a generation already written
        assert self._run is not None and self._shape is not None
        line = next((g for g in self._run.read(GENERATIONS) if g.get("unit") == unit), None)
        self._generations[branch] = int(gen) + 1
        if line is None:  # skipped: the budget or the time limit ran out before it
            return
        writer = self._writer(branch)
        defaults = default_aps(self._records, self._shape)
        for tag, value in generation_scalars(line, self._shape, defaults).items():
            writer.add_scalar(tag, value, global_step=int(gen))
        self._leaders(writer, branch, int(gen), leaders_of(line, self._records))

    # --- files ----------------------------------------------------------------------------------
    def _writer(self, name: str) -> Any:
        if name not in self._writers:
            assert self.folder is not None
            folder = self.folder / name
            # Only a folder with event files from before has anything to purge.
            had = folder.is_dir() and any(p.name.startswith("events.out.tfevents") for p in folder.iterdir())
            purge = self._purge.get(name, 0) if had else None
            self._writers[name] = self._writer_class(log_dir=str(folder), purge_step=purge)
        return self._writers[name]

    def _commit(self) -> None:
        """Flush every writer, then record how far they go: only flushed data is behind the mark."""
        for writer in self._writers.values():
            writer.flush()
        assert self._run is not None
        mark = {"trainings": len(self._records), "generations": self._generations}
        self._run.write_text(f"{FOLDER}/{MARK}", json.dumps(mark, indent=1) + "\n")

    def _read_mark(self) -> dict[str, Any]:
        assert self.folder is not None
        try:
            mark = json.loads((self.folder / MARK).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # none yet (or unreadable): purge everything there is and write it again
        return mark if isinstance(mark, dict) else {}

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:
                pass  # closing after a failed write: nothing more to save
        self._writers = {}


def _after_older_files(folder: Path) -> None:
    """Wait, if need be, for the clock to pass the second of the newest event file there. TensorBoard reads
    a run's files in name order, and a name starts with its creation second: a file this process writes
    must sort after those of a killed process, or the purge it starts with would come before the data it
    hides."""
    stamps = [
        int(p.name.split(".")[3])
        for p in folder.glob("*/events.out.tfevents.*")
        if len(p.name.split(".")) > 3 and p.name.split(".")[3].isdigit()
    ]
    while stamps and int(time.time()) <= max(stamps):
        time.sleep(0.05)
