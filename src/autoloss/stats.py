"""Paired comparisons over seeds: is one loss better than another beyond the seed noise?

Two losses trained on the same seeds (same initial weights and batch order) are compared by their per-seed
differences. The gain's 95 % confidence interval is Student's t on those differences, and "beyond noise"
means the interval excludes zero. Fewer than 3 seeds cannot support that claim (with 2 seeds a t interval
has one degree of freedom and two lucky draws look like a gain), so the verdict is then "too few seeds to
tell". The exact sign-flip permutation p-value is reported beside the t p-value: it assumes no normality,
but with n seeds it cannot go below 2 / 2**n (0.25 with 3 seeds), which is itself worth knowing.

Statistics come from scipy.stats; nothing here is hand-rolled beyond the bookkeeping.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

MIN_SEEDS = 3
CONFIDENCE = 0.95


def paired_comparison(aps: list[float], base: list[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """The paired gain of `aps` over `base` (same seeds, same order).

    Returns mean, std and the per-seed `diffs`; `ci` (low, high) and `p_value` from the paired t test;
    `p_sign_flip` from the exact sign-flip permutation test; `verdict` ("better", "worse", "no clear
    difference" or "too few seeds to tell") and `beyond_noise` (the interval excludes zero, with at least
    3 seeds).
    """
    from scipy import stats

    if len(aps) != len(base):
        raise ValueError(f"paired comparison needs equal seed lists, got {len(aps)} and {len(base)} values")
    if not aps:
        raise ValueError("paired comparison needs at least one seed")
    diffs = np.asarray(aps, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    n = len(diffs)
    mean = float(diffs.mean())
    std = float(diffs.std(ddof=1)) if n > 1 else math.nan
    ci: tuple[float, float] = (math.nan, math.nan)
    p_value = p_flip = math.nan
    if n > 1:
        if std == 0.0:
            # Every seed moved by exactly the same amount: the interval collapses to that amount.
            ci = (mean, mean)
            p_value = 1.0 if mean == 0.0 else 0.0
        else:
            with warnings.catch_warnings():  # near-identical diffs: scipy warns, the numbers stay usable
                warnings.simplefilter("ignore", RuntimeWarning)
                test = stats.ttest_1samp(diffs, 0.0)
            low, high = test.confidence_interval(confidence)
            ci, p_value = (float(low), float(high)), float(test.pvalue)
        p_flip = _sign_flip_p(diffs)
    if n < MIN_SEEDS:
        verdict, beyond = "too few seeds to tell", False
    elif ci[0] > 0:
        verdict, beyond = "better", True
    elif ci[1] < 0:
        verdict, beyond = "worse", True
    else:
        verdict, beyond = "no clear difference", False
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "diffs": [float(d) for d in diffs],
        "ci": [ci[0], ci[1]],
        "confidence": confidence,
        "p_value": p_value,
        "p_sign_flip": p_flip,
        "verdict": verdict,
        "beyond_noise": bool(beyond),
    }


def _sign_flip_p(diffs: np.ndarray) -> float:
    """Two-sided exact sign-flip permutation p-value of the mean difference (all 2**n sign patterns)."""
    from scipy import stats

    if not np.any(diffs):
        return 1.0
    res = stats.permutation_test(
        (diffs,),
        np.mean,
        permutation_type="samples",
        n_resamples=2 ** len(diffs),  # at least every pattern: scipy then enumerates them exactly
        alternative="two-sided",
    )
    return float(res.pvalue)


def describe_gain(gain: dict[str, Any], digits: int = 4) -> str:
    """One readable phrase: `+0.0123 [95 % CI -0.0040, +0.0286], p = 0.12 (3 seeds): no clear difference`."""
    f = f"{{:+.{digits}f}}"
    if gain["verdict"] == "cannot tell":
        return f"cannot tell: {gain.get('reason', 'a training failed')}"
    if gain["n"] < 2 or math.isnan(gain["ci"][0]):
        return f"{f.format(gain['mean'])} ({gain['n']} seed): {gain['verdict']}"
    pct = round(gain["confidence"] * 100)
    # The exact sign-flip p cannot go below 2 / 2**n: quoted only where it could reach 0.05 (6+ seeds).
    flip = gain.get("p_sign_flip")
    exact = f", exact p = {flip:.2g}" if flip is not None and 2.0 / 2 ** gain["n"] < 0.05 else ""
    return (
        f"{f.format(gain['mean'])} [{pct} % CI {f.format(gain['ci'][0])}, {f.format(gain['ci'][1])}], "
        f"p = {gain['p_value']:.2g}{exact} ({gain['n']} seeds): {gain['verdict']}"
    )
