"""Progress you can trust on long work: what is done, what the plan says is left, and when it ends.

A training's cost grows with its length: a rung at 2x the proxy length takes about twice as long as one at
1x, a fidelity target of 1,500 iterations five times a proxy of 300. So time is measured per unit of work
(a proxy-length training in a search, an iteration in a fidelity panel or a transfer), and

    ETA = work left x (seconds of the trainings finished here / their work) / workers

The work left comes from the plan, not from a guess: a fidelity panel or a transfer knows every training it
will run; a search plans its units from its configuration (`search_plan`) and replaces each unit's plan by
what it spent once it has finished. No terminal code here: the CLI renders what this computes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from autoloss.evolution.config import SearchConfig
from autoloss.evolution.driver import FINAL_PAIRS, anchor_losses, reserved_costs
from autoloss.evolution.rungs import ladder, promote_count


def eta_seconds(work_left: float, seconds_per_work: float | None, workers: int) -> float | None:
    """Seconds until `work_left` units are done at `seconds_per_work` each, `workers` at a time; None while
    nothing has been timed (and 0 when nothing is left)."""
    if work_left <= 0:
        return 0.0
    if seconds_per_work is None:
        return None
    return work_left * seconds_per_work / max(1, workers)


class WorkClock:
    """Seconds per unit of work, measured on the trainings that finished in this process (a result taken
    from a cache cost no time, so it says nothing about speed)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.work = 0.0
        self.trainings = 0

    def add(self, seconds: float | None, work: float = 1.0) -> None:
        if seconds is None or seconds < 0 or work <= 0:
            return
        self.seconds += seconds
        self.work += work
        self.trainings += 1

    @property
    def per_work(self) -> float | None:
        return self.seconds / self.work if self.work > 0 else None

    @property
    def per_training(self) -> float | None:
        return self.seconds / self.trainings if self.trainings else None


@dataclass(frozen=True)
class Estimate:
    """Where long work stands. `done` and `total` count trainings (in a search: proxy-length trainings, the
    budget's unit); `seconds_per_training` is measured on the same scale; `eta_s` is None until a training
    has been timed."""

    done: float
    total: float
    seconds_per_training: float | None
    eta_s: float | None
    workers: int

    @property
    def left(self) -> float:
        return max(0.0, self.total - self.done)

    def to_dict(self) -> dict[str, Any]:
        return {
            "done": self.done,
            "total": self.total,
            "left": self.left,
            "seconds_per_training": self.seconds_per_training,
            "eta_s": self.eta_s,
            "workers": self.workers,
        }


class Tally:
    """Progress of a fixed list of trainings (a fidelity panel, a transfer): each finishes here (timed) or
    comes from a cache (done at once, untimed). `work` weighs trainings of different lengths."""

    def __init__(self, trainings: int, work: float, workers: int):
        self.total = trainings
        self.total_work = work
        self.workers = max(1, workers)
        self.done = 0
        self.work_done = 0.0
        self.clock = WorkClock()

    def trained(self, seconds: float | None, work: float = 1.0) -> Estimate:
        self.done += 1
        self.work_done += work
        self.clock.add(seconds, work)
        return self.estimate()

    def cached(self, count: int, work: float) -> Estimate:
        """`count` trainings of `work` units in all, already done by an earlier run."""
        self.done += count
        self.work_done += work
        return self.estimate()

    def estimate(self) -> Estimate:
        eta = eta_seconds(self.total_work - self.work_done, self.clock.per_work, self.workers)
        return Estimate(self.done, self.total, self.clock.per_training, eta, self.workers)


# The default, the published pair, the best named loss and the found pair; or, where a named loss won, the
# best new expression in place of the best named loss (the found row is that loss).
EXPECTED_FINAL_PAIRS = 4


def search_plan(cfg: SearchConfig, units: list[str]) -> dict[str, int]:
    """The proxy-length trainings (the budget's unit: a 2x training counts 2, a candidate on 2 proxy tasks
    counts 2) each unit of a search is planned to ask for, before `--max-proxy-evals` caps their sum:

    - baseline: the default and the named losses at rung 0 (`reserved_costs`);
    - generation g of a branch: top-K candidates at rung 0, and at each higher rung the promotions that
      successive halving makes when the leaders hold: the best fraction of everything trained at the rung
      below (the branch's anchors and top-K per generation so far), less what that rung already trained;
    - combine: the best combine-top cls x reg losses, on every rung;
    - final: `EXPECTED_FINAL_PAIRS` pairs on the held-out seeds. The budget reserves the most the final can
      cost (`reserved_costs`: 5 pairs), but a final trains 5 only where the winner is neither new nor a
      named loss (a rescaling or a sum of named parts), and an ETA planned on 5 would overshoot by a
      fifth of the final in nearly every search.

    A generation may train fewer (fewer survivors, the budget) or more (new leaders are promoted too); the
    finished units' real costs replace the plan as the search goes (`SearchProgress`)."""
    ev = cfg.evolution
    rungs = ladder(ev.rungs, ev.seed)
    tasks = max(1, len(cfg.task.proxy_tasks))
    baseline, final = reserved_costs(cfg)
    plan: dict[str, int] = {}
    for unit in units:
        if unit == "baseline":
            plan[unit] = baseline
        elif unit == "final":
            plan[unit] = final // FINAL_PAIRS * EXPECTED_FINAL_PAIRS
        elif unit == "combine":
            plan[unit] = ev.combine_top**2 * sum(r.cost for r in rungs) * tasks
        else:
            branch, gen = unit.rsplit(":", 1)
            plan[unit] = _generation_cost(branch, int(gen), cfg) * tasks
    return plan


def _generation_cost(branch: str, gen: int, cfg: SearchConfig) -> int:
    ev = cfg.evolution
    rungs = ladder(ev.rungs, ev.seed)
    anchors = 1 + len(anchor_losses(branch))  # the default and the named losses, trained in the baseline

    def trained_at(rung: int, g: int) -> int:
        """How many candidates have trained at `rung` after generation `g` if the leaders hold."""
        if rung == 0:
            return anchors + ev.top_k * (g + 1)
        if g < 0:
            return 0  # promotion happens only inside generations
        return promote_count(trained_at(rung - 1, g), ev.promote)

    cost = ev.top_k * rungs[0].cost
    for r in rungs[1:]:
        cost += max(0, trained_at(r.index, gen) - trained_at(r.index, gen - 1)) * r.cost
    return cost


class SearchProgress:
    """A search's progress, from the events it reports (`Search.progress`): proxy-length trainings done and
    planned, seconds per proxy-length training, and the ETA.

    Between units "done" counts the trainings that finished here; at each unit's end it is set to what the
    search has spent (results taken from the run's cache included), and the unit's plan to its real cost."""

    def __init__(self, cfg: SearchConfig):
        self.cfg = cfg
        self.plan: dict[str, int] = {}
        self.left_units: list[str] = []  # units not finished, in run order
        self.current: str | None = None
        self.spent = 0  # budget units spent when the last unit ended (or the search started)
        self.in_unit = 0.0  # proxy-length trainings finished since
        self.workers = max(1, cfg.backend.workers)
        self.clock = WorkClock()
        self.elapsed_at_start = 0.0  # seconds the run had spent before this process (a resume)

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "start":
            self.plan = search_plan(self.cfg, event["units"])
            done = set(event.get("completed", []))
            self.left_units = [u for u in event["units"] if u not in done]
            self.spent = int(event.get("proxy_count", 0))
            self.workers = max(1, int(event.get("workers", self.workers)))
            self.elapsed_at_start = float(event.get("elapsed_s", 0.0))
        elif kind == "unit":
            self.current = event["unit"]
            self.in_unit = 0.0
        elif kind == "proxy-done":
            multiplier = event.get("multiplier", 1)
            self.in_unit += multiplier
            self.clock.add(event.get("result", {}).get("seconds"), multiplier)
        elif kind == "skipped":
            # Out of budget or time: no later generation or combination trains anything either.
            for u in self.left_units:
                if u not in ("baseline", "final"):
                    self.plan[u] = 0
        elif kind == "unit-done":
            unit = event["unit"]
            self.spent = int(event.get("proxy_count", self.spent + self.in_unit))
            self.left_units = [u for u in self.left_units if u != unit]
            self.current, self.in_unit = None, 0.0

    def estimate(self, elapsed_s: float | None = None) -> Estimate:
        """The estimate now; `elapsed_s`, the seconds this process has run the search, lets a time limit
        shorten the ETA (the generations stop at the limit; the final still runs)."""
        ahead = 0.0
        for u in self.left_units:
            planned = self.plan.get(u, 0)
            ahead += max(planned, self.in_unit) if u == self.current else planned
        done = self.spent + self.in_unit
        total = self.spent + ahead
        budget = self.cfg.evolution.max_proxy_evals
        if budget is not None:
            total = min(total, max(budget, done))
        per = self.clock.per_work
        eta = eta_seconds(total - done, per, self.workers)
        limit = self.cfg.evolution.time_limit_s
        if eta is not None and per is not None and limit is not None and elapsed_s is not None:
            final = self.plan.get("final", 0) if "final" in self.left_units else 0
            time_left = max(0.0, limit - self.elapsed_at_start - elapsed_s)
            eta = min(eta, time_left + (eta_seconds(final, per, self.workers) or 0.0))
        return Estimate(done, max(total, done), per, eta, self.workers)


def format_duration(seconds: float | None) -> str:
    """`95` -> "1m35s", `7300` -> "2h02m"; "?" for an unknown duration."""
    if seconds is None:
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


PROGRESS_LOG = "progress.jsonl"


class ProgressLog:
    """A progress listener (`Search(progress=...)`) that appends where the search stands to
    `<run>/progress.jsonl` after every finished training and unit: seconds since the run began, proxy-length
    trainings done and planned, and the ETA then. It is the record an ETA is judged against afterwards
    (`bench/eta.py`: what it predicted at 25 % done against when the run really ended). Only observing:
    a journal it cannot write stops the log, never the search."""

    def __init__(self, cfg: SearchConfig):
        self.tracker = SearchProgress(cfg)
        self.run: Any = None
        self.started = time.monotonic()
        self.stopped: str | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        self.tracker.update(event)
        kind = event.get("type")
        if kind == "start":
            from autoloss.runs.rundir import RunDir

            self.started = time.monotonic()
            self.run = RunDir.open(event["run"])
        if self.run is None or self.stopped is not None or kind not in ("start", "proxy-done", "unit-done"):
            return
        elapsed = time.monotonic() - self.started
        est = self.tracker.estimate(elapsed_s=elapsed)
        line = {
            "event": kind,
            "unit": event.get("unit", self.tracker.current),
            "elapsed_s": round(self.tracker.elapsed_at_start + elapsed, 3),
            **est.to_dict(),
        }
        try:
            self.run.append(PROGRESS_LOG, [line])
        except Exception as exc:  # only observing: the search must not stop for its log
            self.stopped = f"{type(exc).__name__}: {exc}"
