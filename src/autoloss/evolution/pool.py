"""The survivor pool: filter survivors that were not picked for a proxy training wait for a later generation.

A generation screens thousands of offspring and trains its top K survivors; without a pool the rest are
marked seen and never trained, so a good candidate that one generation's pick ranked K+1st is lost for good.
With a pool of capacity N, every generation picks its K from its own survivors and the pool together, by the
same rule (`funnel.pick_top_k`: best MOS score, or at random without MOS), and the survivors left over go to
the pool.

Expiry, the one rule: the pool keeps the N best by the pick rule (MOS score; newer first where scores tie),
and what falls below that is dropped for good. Without MOS there is no score to keep by, so the pool keeps
the N newest. Entries carry the generation they were screened in, so the run's events say where a trained or
expired candidate came from. The pool is part of the checkpoint: a resumed search draws from the same pool.
"""

from __future__ import annotations

import random
from typing import Any

from autoloss.evolution.funnel import pick_top_k


class SurvivorPool:
    """Survivors waiting for a proxy training, at most `capacity` of them (0: no pool)."""

    def __init__(self, capacity: int, by_mos: bool) -> None:
        if capacity < 0:
            raise ValueError(f"the survivor pool's capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self.by_mos = by_mos
        self.entries: list[dict[str, Any]] = []  # {"text", "key", "mos_score", "generation"}

    def pick(
        self,
        survivors: list[dict[str, Any]],
        k: int,
        generation: int,
        rng: random.Random,
        afford: int | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """This generation's `k` picks from its `survivors` and the pool, of which the budget can `afford`
        the first ones (the others wait like any survivor left over), then the pool refilled.

        Returns (picked, pooled, expired): `pooled` are the survivors of this generation that now wait in
        the pool, `expired` every candidate dropped by this call, this generation's or an older one's
        (each entry with the "generation" it was screened in)."""
        fresh = [{**s, "generation": generation} for s in survivors]
        candidates = fresh + self.entries
        picked = pick_top_k(candidates, k, rng, by_mos=self.by_mos)
        picked = picked[: len(picked) if afford is None else max(0, afford)]
        chosen = {s["text"] for s in picked}
        rest = sorted((s for s in candidates if s["text"] not in chosen), key=self._keep_order)
        kept, expired = rest[: self.capacity], rest[self.capacity :]
        self.entries = kept
        pooled = [s for s in kept if s["generation"] == generation]
        return picked, pooled, expired

    def _keep_order(self, s: dict[str, Any]) -> tuple:
        newer = -int(s["generation"])
        if not self.by_mos:
            return (newer, s["text"])
        score = s["mos_score"] if s["mos_score"] is not None else float("-inf")
        return (-score, newer, s["text"])

    def __len__(self) -> int:
        return len(self.entries)

    def state_dict(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.entries]

    def load_state_dict(self, entries: list[dict[str, Any]]) -> None:
        self.entries = [dict(e) for e in entries]
