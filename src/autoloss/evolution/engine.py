"""The evolution engine for one branch: ask for candidates, tell their proxy results, move on.

State is explicit (a `random.Random`, the evaluated candidates, the parents, the generation) and goes
to and from plain JSON, so a search can stop after any generation and resume exactly. Results may be
told in any order: parents are chosen only when the generation is closed, by a total order (mAP, then
MOS score, then the canonical text), never by arrival.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import asdict, dataclass, field

from autoloss.evolution.variation import offspring
from autoloss.expr.parse import parse
from autoloss.expr.tree import Expr
from autoloss.spaces.branches import Branch
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half
from autoloss.spaces.named import NAMED

DEFAULT = "default"  # the detector's stock loss: trained and ranked like a candidate, never bred from


@dataclass
class Evaluated:
    """One candidate's proxy history. `rungs` maps a rung index (text: it is a JSON key) to the APs of its
    trainings there, one per rung seed; `status` and `reason` are those of its rung-0 training, and
    `rung_failures` says, for a higher rung where a training diverged or failed, what happened. Such a
    rung does not count as reached, and the candidate ranks as failed: after every candidate that trained
    well on each rung it was given, since a loss that breaks on a longer schedule is not a better loss
    (it was ranked above every rung-0 entry by its rung-0 status before)."""

    text: str
    key: str
    generation: int
    mos_score: float | None
    status: str
    reason: str = ""
    rungs: dict[str, list[float]] = field(default_factory=dict)
    anchor: bool = False  # the default or a named loss: trained whatever the filters say
    rung_failures: dict[str, str] = field(default_factory=dict)  # rung index -> "status: reason"

    def reached(self, rung: int) -> bool:
        """Trained on `rung`, every seed finishing (rung 0: see `status`)."""
        return str(rung) in self.rungs and str(rung) not in self.rung_failures

    @property
    def top_rung(self) -> int:
        return max((int(r) for r in self.rungs if r not in self.rung_failures), default=-1)

    def score(self, rung: int) -> float | None:
        """Mean AP over the seeds of `rung`, or None if it was not trained there."""
        aps = self.rungs.get(str(rung))
        return statistics.fmean(aps) if aps else None

    @property
    def ap(self) -> float:
        """The fitness: mean AP at the highest rung reached."""
        return self.score(self.top_rung) or 0.0

    def rank_key(self) -> tuple:
        """Failed on a rung last; then higher rung first, then its mean AP: candidates are compared only on
        the same rung and seeds."""
        mos = self.mos_score if self.mos_score is not None else float("-inf")
        return (bool(self.rung_failures), -self.top_rung, -self.ap, -mos, self.text)

    def failed_at(self) -> str:
        """ "rung N: status: reason" of its first failed rung, or "" if it has none."""
        for rung in sorted(self.rung_failures, key=int):
            return f"rung {rung}: {self.rung_failures[rung]}"
        return ""


class Evolution:
    def __init__(
        self,
        br: Branch,
        rng: random.Random,
        *,
        offspring_count: int,
        parents: int,
        limits: TreeLimits,
        crossover_rate: float = 0.3,
        strategy: str = "evolution",
    ):
        self.branch = br
        self.rng = rng
        self.offspring_count = offspring_count
        self.parent_count = parents
        self.limits = limits
        self.crossover_rate = crossover_rate
        self.strategy = strategy
        self.generation = 0
        self.evaluated: dict[str, Evaluated] = {}  # functional key -> result
        self.parents: list[str] = []

    def named_losses(self) -> list[Expr]:
        return [parse(n.text) for n in NAMED.values() if n.branch == self.branch.name]

    def ask(self) -> list[Expr]:
        """This generation's candidates: the named losses plus random trees first, then offspring."""
        if self.strategy == "random":
            return ramped_half_and_half(self.branch, self.rng, self.offspring_count, self.limits)
        if self.generation == 0 or not self.parents:
            named = self.named_losses()
            count = max(0, self.offspring_count - len(named))
            return named + ramped_half_and_half(self.branch, self.rng, count, self.limits)
        return offspring(
            [parse(t) for t in self.parents],
            self.branch,
            self.rng,
            self.offspring_count,
            self.limits,
            self.crossover_rate,
        )

    def tell(self, result: Evaluated) -> None:
        self.evaluated[result.key] = result

    def close_generation(self) -> list[str]:
        """Pick the parents (best so far by rung, then mAP: elitism) and advance the generation counter."""
        ok = sorted(
            (r for r in self.evaluated.values() if r.status == "ok" and r.text != DEFAULT),
            key=Evaluated.rank_key,
        )
        self.parents = [r.text for r in ok[: self.parent_count]]
        if not self.parents:
            # Nothing trained yet (all diverged, or no proxy budget): breed from the named losses.
            self.parents = [e.text for e in self.named_losses()]
        self.generation += 1
        return self.parents

    def best(self, n: int = 1) -> list[Evaluated]:
        return sorted((r for r in self.evaluated.values() if r.status == "ok"), key=Evaluated.rank_key)[:n]

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {
            "generation": self.generation,
            "parents": list(self.parents),
            "evaluated": [asdict(r) for r in self.evaluated.values()],
            "rng": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict) -> None:
        self.generation = state["generation"]
        self.parents = list(state["parents"])
        self.evaluated = {r["key"]: Evaluated(**r) for r in state["evaluated"]}
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
