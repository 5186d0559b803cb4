"""One generation through the funnel: syntactic dedup -> validity + functional key -> functional dedup
-> CPV -> MOS -> the top-K by MOS score. Screening runs in chunks on the executor; every candidate ends
with exactly one event saying the stage it reached and why it stopped there.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from autoloss.evolution.work import screen_task
from autoloss.expr.tree import Expr
from autoloss.runs.failpoints import failpoint

STAGES = ("generated", "valid", "unique", "cpv", "mos", "proxy")


@dataclass
class Screened:
    events: list[dict[str, Any]] = field(default_factory=list)  # candidates stopped by a filter
    survivors: list[dict[str, Any]] = field(default_factory=list)  # passed every enabled filter
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _run_chunks(
    submit: Callable[..., Future], texts: list[str], branch: str, cpv: bool, mos: bool, chunk: int
) -> list[dict[str, Any]]:
    parts = [texts[i : i + chunk] for i in range(0, len(texts), chunk)]
    futures = [submit(screen_task, part, branch, cpv, mos) for part in parts]
    out: list[dict[str, Any]] = []
    for part, f in zip(parts, futures, strict=True):  # in submission order: independent of worker speed
        try:
            out.extend(f.result())
        except Exception:  # a lost worker (screening itself never raises): the chunk once more
            try:
                out.extend(submit(screen_task, part, branch, cpv, mos).result())
            except Exception as exc:
                out.extend(_unscreened(part, exc, "cpv" if cpv or mos else "validity"))
    return out


def _unscreened(texts: list[str], exc: Exception, stage: str) -> list[dict[str, Any]]:
    """Results for a chunk whose screening failed twice: rejected at the stage it was meant to pass, with
    the reason, so the search goes on and the funnel's counts still add up."""
    reason = f"screening failed twice ({type(exc).__name__}: {exc})"
    return [{"stage": stage, "passed": False, "reason": reason, "key": None} for _ in texts]


def screen_generation(
    candidates: list[Expr],
    branch: str,
    seen_syntax: set[str],
    seen_keys: set[str],
    submit: Callable[..., Future],
    *,
    cpv: bool,
    mos: bool,
    chunk: int = 200,
) -> Screened:
    out = Screened()
    out.counts["generated"] = len(candidates)
    fresh: list[str] = []
    for expr in candidates:
        if expr.key in seen_syntax:
            out.events.append(
                {"text": expr.text, "stage": "dedup", "reason": "same expression as an earlier candidate"}
            )
            continue
        seen_syntax.add(expr.key)
        fresh.append(expr.text)

    # Phase 1: validity and the functional key (cheap), so duplicates in behaviour never reach CPV/MOS.
    first = _run_chunks(submit, fresh, branch, False, False, chunk)
    failpoint("screening")
    out.seconds["validity"] = sum(r.get("seconds") or 0.0 for r in first)
    unique: list[str] = []
    keys: dict[str, str] = {}  # unique text -> its functional key
    valid = 0
    for text, r in zip(fresh, first, strict=True):
        if r["stage"] == "validity" and not r["passed"]:
            out.events.append({"text": text, "stage": "validity", "reason": r["reason"], "key": r.get("key")})
            continue
        valid += 1
        key = r.get("key")
        if key is None or key in seen_keys:
            out.events.append(
                {
                    "text": text,
                    "stage": "dedup",
                    "key": key,
                    "reason": "same behaviour as an earlier candidate (functional key)",
                }
            )
            continue
        seen_keys.add(key)
        unique.append(text)
        keys[text] = key
    out.counts["valid"] = valid
    out.counts["unique"] = len(unique)

    if not cpv and not mos:
        out.survivors = [{"text": t, "key": keys[t], "mos_score": None} for t in unique]
        out.counts["cpv"] = out.counts["mos"] = len(unique)
        return out

    # Phase 2: the expensive filters on behaviourally distinct candidates only.
    second = _run_chunks(submit, unique, branch, cpv, mos, chunk)
    out.seconds["cpv+mos"] = sum(r.get("seconds") or 0.0 for r in second)
    cpv_passed = 0
    for text, r in zip(unique, second, strict=True):
        if r["passed"]:
            cpv_passed += 1
            out.survivors.append({"text": text, "key": r["key"], "mos_score": r.get("mos_score")})
            continue
        if r["stage"] == "mos":
            cpv_passed += 1
        out.events.append(
            {
                "text": text,
                "stage": r["stage"],
                "reason": r["reason"],
                "key": r.get("key"),
                "mos_score": r.get("mos_score"),
            }
        )
    out.counts["cpv"] = cpv_passed if cpv else len(unique)
    out.counts["mos"] = len(out.survivors)
    return out


def pick_top_k(
    survivors: list[dict[str, Any]], k: int, rng: random.Random, by_mos: bool
) -> list[dict[str, Any]]:
    """The K candidates that get a proxy training: best MOS scores, or (no MOS: plain evolution) random."""
    if by_mos:
        ranked = sorted(
            survivors, key=lambda s: (-(s["mos_score"] if s["mos_score"] is not None else -1e9), s["text"])
        )
        return ranked[:k]
    pool = sorted(survivors, key=lambda s: s["text"])
    return rng.sample(pool, min(k, len(pool)))
