"""The live display of a running search: funnel counts, proxy trainings done/left, best vs default, ETA.

The library reports progress as plain event dicts; this is the only place that draws them.
"""

from __future__ import annotations

import time
from typing import Any

from autoloss.spaces.named import label


class LiveDisplay:
    def __init__(self, cfg: Any, console: Any, enabled: bool = True):
        self.cfg = cfg
        self.console = console
        self.enabled = enabled
        self.start = time.monotonic()
        self.progress = None
        self.task = None
        ev = cfg.evolution
        n_branches = 2 if ev.branch == "both" else 1
        combos = ev.combine_top**2 if n_branches == 2 else 0
        # Expected proxy trainings, roughly: the anchors, generations x top-K at rung 0, about a third of
        # those again per higher rung, the combinations and the final table (4 rows x held-out seeds). The
        # bar grows if promotion trains more.
        from autoloss.evolution.rungs import parse_rungs

        rungs = parse_rungs(ev.rungs)
        per_branch = ev.generations * ev.top_k * rungs[0][1]
        promoted = sum(round(per_branch * ev.promote**i) * s for i, (_, s) in enumerate(rungs) if i > 0)
        self.expected = 8 + n_branches * (per_branch + promoted) + combos * rungs[-1][1] + 4 * ev.final_seeds
        self.done = 0

    def __enter__(self) -> LiveDisplay:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("proxy trainings"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("proxy", total=self.expected)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def _print(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, markup=False, highlight=False)

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start" and event["completed"]:
            self._print(f"resuming after {', '.join(event['completed'])}")
        elif kind == "unit":
            self._print(f"[{time.monotonic() - self.start:6.0f}s] {event['unit']}")
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
            self.done += 1
            res = event["result"]
            ap = res.get("metrics", {}).get("AP")
            ap_s = f"mAP {ap:.4f}" if ap is not None and res.get("status") == "ok" else res.get("status")
            losses = f"cls={label(event['cls'])}  reg={label(event['reg'])}"
            length = f" x{event['multiplier']}" if event.get("multiplier", 1) != 1 else ""
            self._print(f"    proxy seed {event['seed']}{length}: {ap_s}  {losses}")
            if self.progress is not None:
                self.expected = max(self.expected, self.done)
                self.progress.update(self.task, completed=self.done, total=self.expected)
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
