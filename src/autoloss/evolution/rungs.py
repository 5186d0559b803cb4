"""Multi-fidelity promotion: successive halving over rungs of longer trainings on more seeds.

A short proxy favours losses that learn fast early (the short-horizon bias of loss learning). Rungs spend
long trainings only on what earned them, as in Hyperband/ASHA and progressive dynamic hurdles: every
candidate trains at rung 0 (the proxy length, one seed); at each rung the best `promote` fraction of
everything trained there so far moves up to the next rung — a longer schedule on seeds no lower rung used —
up to the last. A candidate's fitness is the mean AP over its highest rung's seeds, and candidates are
compared only on the same rung (same schedule, same seeds). The final comparison re-trains on seeds no
rung used, so a winner's reported mAP is never one of the draws it was selected on.

`--rungs 1x1,3x2` reads: rung 0 is 1x the proxy length on 1 seed, rung 1 is 3x on 2 new seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from autoloss.errors import AutolossError


class RungError(AutolossError, ValueError):
    """A rung specification that cannot work."""


@dataclass(frozen=True)
class Rung:
    index: int
    multiplier: int  # training length in units of the proxy length; also its cost in the budget
    seeds: tuple[int, ...]

    @property
    def cost(self) -> int:
        """Budget units one candidate spends here: one per proxy-length training."""
        return self.multiplier * len(self.seeds)


def parse_rungs(text: str) -> tuple[tuple[int, int], ...]:
    """`"1x1,3x2"` -> ((1, 1), (3, 2)): (length multiplier, seeds) per rung, multipliers non-decreasing."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise RungError("--rungs is empty; give e.g. 1x1,3x2 (length multiplier x seeds per rung)")
    out = []
    for p in parts:
        mult, sep, seeds = p.partition("x")
        if not sep or not mult.isdigit() or not seeds.isdigit():
            raise RungError(f"--rungs entry {p!r} must read MULTIPLIERxSEEDS, e.g. 3x2")
        m, s = int(mult), int(seeds)
        if m < 1 or s < 1:
            raise RungError(f"--rungs entry {p!r}: multiplier and seeds must be positive")
        if out and m < out[-1][0]:
            raise RungError(f"--rungs {text!r}: a higher rung cannot train shorter than the one below it")
        out.append((m, s))
    return tuple(out)


def ladder(text: str, base_seed: int) -> list[Rung]:
    """The rungs with their seeds: consecutive, disjoint blocks starting at the search seed."""
    rungs, next_seed = [], base_seed
    for i, (m, s) in enumerate(parse_rungs(text)):
        rungs.append(Rung(i, m, tuple(range(next_seed, next_seed + s))))
        next_seed += s
    return rungs


def held_out_seeds(rungs: list[Rung], count: int) -> list[int]:
    """`count` seeds above every rung's: the final comparison's, never used for selection."""
    start = max(s for r in rungs for s in r.seeds) + 1
    return list(range(start, start + count))


def promote_count(pool: int, fraction: float) -> int:
    """How many of `pool` candidates trained at a rung belong on the next one: at least one."""
    return max(1, math.floor(pool * fraction + 1e-9)) if pool else 0


def validate_promote(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise RungError(f"--promote must be a fraction in (0, 1], got {fraction}")
