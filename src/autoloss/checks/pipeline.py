"""The screening pipeline: validity -> dedup -> CPV -> MOS, cheapest first, stopping at the first rejection.

`screen` is what the search calls per candidate; `screen_texts` is its worker-friendly batch form (a
module-level function, plain data in and out, never raising for a bad candidate) for process pools.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import torch

from autoloss.checks.config import CheckConfig, resolve_config
from autoloss.checks.cpv import cpv as cpv_filter
from autoloss.checks.equivalence import functional_key
from autoloss.checks.mos import baseline_score
from autoloss.checks.mos import mos as mos_filter
from autoloss.checks.validity import Evaluation, validity
from autoloss.checks.verdict import ScreenResult, Verdict, run_filter
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
        stages.append(("cpv", lambda: cpv_filter(loss, config)))
    if mos:
        baseline_score(
            loss.branch, config.mos
        )  # cached; computed here so the MOS time is the candidate's own
        stages.append(("mos", lambda: mos_filter(loss, config)))
    # The search may call this under torch.no_grad(); the filters need autograd.
    with torch.enable_grad():
        for name, check in stages:
            verdict = run_filter(name, check)
            result.verdicts.append(verdict)
            result.stage = name
            if name == "mos":
                result.mos_score = verdict.score
            if not verdict.passed:
                result.reason = verdict.reason
                result.seconds = time.perf_counter() - start
                return result
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
    """
    config = resolve_config(config)
    seen = set(seen_keys) if seen_keys is not None else None
    out = []
    for text in texts:
        start = time.perf_counter()
        try:
            loss = Loss.parse(text, branch)
        except Exception as exc:  # a malformed candidate is a rejection, never a crash of the batch
            verdict = Verdict("validity", False, f"does not parse: {exc}", None, time.perf_counter() - start)
            result = ScreenResult([verdict], False, "validity", verdict.reason, None, None, verdict.seconds)
        else:
            result = screen(loss, config, cpv=cpv, mos=mos, seen_keys=seen)
        out.append({"text": text, "branch": branch, **result.to_dict()})
    return out
