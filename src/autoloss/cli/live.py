"""The live display of a running search: funnel counts, proxy trainings done and left, best vs default, ETA.

The library reports progress as plain event dicts and computes where the search stands
(`evolution/progress.py`); this is the only place that draws them.
"""

from __future__ import annotations

import time
from typing import Any

from autoloss.evolution.progress import Estimate, SearchProgress, format_duration
from autoloss.spaces.named import label


def progress_text(est: Estimate) -> str:
    """`12/50 done, 38 left · 41 s per proxy-length training · 2 workers · ETA 13m00s`: counts in
    proxy-length trainings (the budget's unit: a 2x training counts 2)."""
    each = "?" if est.seconds_per_training is None else f"{est.seconds_per_training:.0f} s"
    return (
        f"{est.done:g}/{est.total:g} done, {est.left:g} left · {each} per proxy-length training · "
        f"{est.workers} worker{'s' if est.workers != 1 else ''} · ETA {format_duration(est.eta_s)}"
    )


class LiveDisplay:
    def __init__(self, cfg: Any, console: Any, enabled: bool = True):
        self.cfg = cfg
        self.console = console
        self.enabled = enabled
        self.start = time.monotonic()
        self.progress = None
        self.task = None
        self.tracker = SearchProgress(cfg)

    def __enter__(self) -> LiveDisplay:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("proxy trainings"),
                BarColumn(),
                TextColumn("{task.fields[text]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("proxy", total=None, text="planning")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def estimate(self) -> Estimate:
        return self.tracker.estimate(elapsed_s=time.monotonic() - self.start)

    def _refresh(self) -> None:
        if self.progress is None or not self.tracker.plan:
            return
        est = self.estimate()
        self.progress.update(self.task, completed=est.done, total=est.total, text=progress_text(est))

    def _print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, highlight=False)

    def update(self, event: dict[str, Any]) -> None:
        self.tracker.update(event)
        self._show(event)
        self._refresh()

    def _show(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start" and event["completed"]:
            self._print(f"resuming after {', '.join(event['completed'])}")
        elif kind == "unit":
            # Also where the search stands, for logs, where the bar does not draw.
            where = f"  ({progress_text(self.estimate())})" if self.tracker.plan else ""
            self._print(f"[{time.monotonic() - self.start:6.0f}s] {event['unit']}{where}")
        elif kind == "screened":
            c = event["counts"]
            self._print(
                "    funnel: "
                + " -> ".join(
                    f"{k} {c.get(k, 0)}" for k in ("generated", "valid", "unique", "cpv", "mos", "proxy")
                )
                + f"  ({event['seconds']:.1f} s screening)"
            )
        elif kind == "proxy-done":
            res = event["result"]
            ap = res.get("metrics", {}).get("AP")
            ap_s = f"mAP {ap:.4f}" if ap is not None and res.get("status") == "ok" else res.get("status")
            losses = f"cls={label(event['cls'])}  reg={label(event['reg'])}"
            length = f" x{event['multiplier']}" if event.get("multiplier", 1) != 1 else ""
            self._print(f"    proxy seed {event['seed']}{length}: {ap_s}  {losses}")
        elif kind == "generation":
            best = event["best"][0] if event["best"] else None
            base = event.get("baseline_ap")
            if best is not None:
                vs = f" (default, rung 0: {base:.4f})" if base is not None else ""
                rung = f"rung {best['rung']} mAP {best['ap']:.4f}"
                self._print(f"    best so far: {rung}{vs}  {label(best['text'], 80)}")
        elif kind == "promoted":
            self._print(f"    promoted {event['count']} to rung {event['rung']}")
        elif kind == "skipped":
            self._print(f"    skipped: {event['reason']}")


class TrainingsDisplay:
    """The progress of `autoloss fidelity` and `autoloss transfer`, from their progress events
    (`transfer.run.progress_event`): a bar with done / total trainings, seconds per training and the ETA on
    stderr where it is a terminal, and a line per training (for logs too); nothing with --quiet."""

    def __init__(self, console: Any, quiet: bool = False):
        import sys

        self.console = console
        self.quiet = quiet
        self.bar_enabled = not quiet and sys.stderr.isatty()
        self.progress = None
        self.task = None

    def __enter__(self) -> TrainingsDisplay:
        if self.bar_enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("trainings"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[text]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("trainings", total=None, text="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def update(self, event: dict[str, Any]) -> None:
        if self.quiet:
            return
        est = Estimate(
            event["done"], event["total"], event["seconds_per_training"], event["eta_s"], event["workers"]
        )
        where = f"[{est.done:g}/{est.total:g}]"
        if event.get("type") == "cached":
            line = f"  {where} {event['count']} trainings taken from the results in --out"
        else:
            rec = event["record"]
            res = rec["result"]
            ap = res.get("metrics", {}).get("AP")
            shown = f"mAP {ap:.4f}" if ap is not None and res.get("status") == "ok" else res.get("status")
            losses = f"cls={label(rec['cls'])}  reg={label(rec['reg'])}"
            line = f"  {where} seed {rec['seed']}: {shown}  {losses}  (ETA {format_duration(est.eta_s)})"
        self.console.print(line, markup=False, highlight=False)
        if self.progress is not None:
            each = "?" if est.seconds_per_training is None else f"{est.seconds_per_training:.0f} s"
            text = f"{each} per training · ETA {format_duration(est.eta_s)}"
            self.progress.update(self.task, completed=est.done, total=est.total, text=text)
