"""The screening pipeline: validity -> dedup -> CPV -> MOS, cheapest first, stopping at the first rejection.

`screen` is what the search calls per candidate; `screen_texts` is its worker-friendly batch form (a
module-level function, plain data in and out, never raising for a bad candidate) for process pools. It runs
MOS, the expensive filter, on all the candidates of a call that reach it together (`mos.mos_batch`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

from autoloss.checks.config import CheckConfig, resolve_config
from autoloss.checks.cpv import cpv as cpv_filter
from autoloss.checks.equivalence import functional_key
from autoloss.checks.mos import baseline_score, mos_batch
from autoloss.checks.mos import mos as mos_filter
from autoloss.checks.validity import Evaluation, validity
from autoloss.checks.verdict import ScreenResult, Verdict, finite_or_none, run_filter, single_thread
from autoloss.loss import Loss

DUPLICATE = "duplicate of an earlier candidate"


def screen(
    loss: Loss,
    config: CheckConfig | dict[str, Any] | None = None,
    *,
    cpv: bool = True,
    mos: bool = True,
    seen_keys: set[str] | None = None,
) -> ScreenResult:
    """Run the filters on `loss`; `cpv=False` / `mos=False` skip those (the search's ablation).

    With `seen_keys`, a candidate whose functional key is already in the set stops at "dedup"; a new key
    is added to the set, so one set passed along a generation dedups the whole generation.
    """
    config = resolve_config(config)
    start = time.perf_counter()
    result, ok = _screen_before_mos(loss, config, cpv, seen_keys)
    if ok and mos:
        baseline_score(
            loss.branch, config.mos
        )  # cached; computed here so the MOS time is the candidate's own
        with torch.enable_grad():
            ok = _record(result, run_filter("mos", lambda: mos_filter(loss, config)))
    return _finish(result, ok, start)


def _screen_before_mos(
    loss: Loss, config: CheckConfig, cpv: bool, seen_keys: set[str] | None
) -> tuple[ScreenResult, bool]:
    """validity -> dedup -> CPV; the result so far and whether the candidate passed them all."""
    result = ScreenResult()
    evaluation: list[Evaluation] = []

    def check_validity() -> tuple[bool, str, float | None]:
        passed, reason, score, ev = validity(loss, config)
        if ev is not None:
            evaluation.append(ev)
        return passed, reason, score

    def check_dedup() -> tuple[bool, str, float | None]:
        result.key = functional_key(loss, config, evaluation[0])
        if seen_keys is not None:
            if result.key in seen_keys:
                return False, DUPLICATE, None
            seen_keys.add(result.key)
        return True, "new behaviour", None

    stages = [("validity", check_validity), ("dedup", check_dedup)]
    if cpv:
        stages.append(("cpv", lambda: cpv_filter(loss, config, evaluation[0])))
    # The search may call this under torch.no_grad(); the filters need autograd.
    with torch.enable_grad():
        for name, check in stages:
            if not _record(result, run_filter(name, check)):
                return result, False
    return result, True


def _record(result: ScreenResult, verdict: Verdict) -> bool:
    result.verdicts.append(verdict)
    result.stage = verdict.name
    if verdict.name == "mos":
        result.mos_score = verdict.score
    if not verdict.passed:
        result.reason = verdict.reason
    return verdict.passed


def _finish(result: ScreenResult, ok: bool, start: float) -> ScreenResult:
    if ok:
        result.passed, result.stage, result.reason = True, "passed", "passed every filter"
    result.seconds = time.perf_counter() - start
    return result


def screen_texts(
    texts: list[str],
    branch: str,
    config: CheckConfig | dict[str, Any] | None = None,
    cpv: bool = True,
    mos: bool = True,
    seen_keys: Iterable[str] | None = None,
) -> list[dict[str, Any]]:
    """Screen prefix texts of one branch; one plain dict per text, in order, for process-pool workers.

    Each dict has the `ScreenResult` fields (verdicts as dicts) plus `text` and `branch`. A text that does
    not parse, or a candidate that crashes a filter, is a rejection with the message as its reason.
    `seen_keys` (optional) dedups against earlier keys and within the batch.

    validity, dedup and CPV run per text, in order; the candidates that pass them go through MOS together,
    `config.mos.batch_size` at a time, with the very verdicts they would get one by one (a MOS score does
    not depend on the batch). Each one's MOS `seconds` is its equal share of its batch's time.
    """
    config = resolve_config(config)
    seen = set(seen_keys) if seen_keys is not None else None
    results: list[ScreenResult] = []
    starts: list[float] = []
    waiting: list[tuple[int, Loss]] = []  # (index, loss) of the candidates that reach MOS
    for text in texts:
        start = time.perf_counter()
        try:
            loss = Loss.parse(text, branch)
        except Exception as exc:  # a malformed candidate is a rejection, never a crash of the batch
            verdict = Verdict("validity", False, f"does not parse: {exc}", None, time.perf_counter() - start)
            result = ScreenResult([verdict], False, "validity", verdict.reason, None, None, verdict.seconds)
        else:
            result, ok = _screen_before_mos(loss, config, cpv, seen)
            if ok and mos:
                waiting.append((len(results), loss))
            else:
                _finish(result, ok, start)
        result.seconds = time.perf_counter() - start  # MOS, where it runs, adds its share below
        results.append(result)
        starts.append(start)
    size = config.mos.batch_size
    for first in range(0, len(waiting), size):
        chunk = waiting[first : first + size]
        for (k, _), verdict in zip(chunk, _mos_verdicts([loss for _, loss in chunk], config), strict=True):
            result = results[k]
            spent = result.seconds + verdict.seconds
            _finish(result, _record(result, verdict), starts[k])
            result.seconds = spent
    return [{"text": text, "branch": branch, **r.to_dict()} for text, r in zip(texts, results, strict=True)]


def _mos_verdicts(losses: list[Loss], config: CheckConfig) -> list[Verdict]:
    """MOS verdicts of one batch; if the batch as a whole fails, each loss gets its own run and verdict."""
    start = time.perf_counter()
    try:
        with torch.enable_grad(), single_thread():
            judged = mos_batch(losses, config)
    except Exception:  # e.g. a baseline that cannot be computed: every candidate gets the error as alone
        return [run_filter("mos", lambda loss=loss: mos_filter(loss, config)) for loss in losses]
    share = (time.perf_counter() - start) / len(losses)
    return [Verdict("mos", bool(p), reason, finite_or_none(score), share) for p, reason, score in judged]
