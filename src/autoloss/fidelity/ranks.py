"""Rank agreement between a proxy's scores and a target's, with uncertainty.

Kendall τ and Spearman ρ come from scipy.stats; their 95 % intervals from a paired bootstrap over the
panel's losses (scipy.stats.bootstrap, percentile method, fixed seed): with a dozen losses an interval is
wide, and saying so is the point. Top-k agreement asks the question a search cares about: is the proxy's
best loss among the target's best?
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np


def _tau(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Kendall τ-b. One pair of score lists: scipy.stats.kendalltau. A batch of bootstrap resamples (one
    row each): the same statistic for every row at once (thousands of scipy calls cost seconds per
    report), from the signs of all pairwise differences: τ-b = Σ sign(Δx)·sign(Δy) / √(pairs untied in
    x · pairs untied in y). tests/test_fidelity.py checks it against scipy on rows with ties."""
    from scipy.stats import kendalltau

    if x.ndim == 1:
        return kendalltau(x, y).statistic
    sx = np.sign(x[:, :, None] - x[:, None, :])
    sy = np.sign(y[:, :, None] - y[:, None, :])
    # Each unordered pair appears twice in the full matrices; the ratio is unchanged.
    both = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        tau = (sx * sy).sum(axis=(1, 2)) / both
    # A resample that repeats one loss has no ranking: it counts as no agreement (0), not as NaN.
    return np.nan_to_num(tau, nan=0.0)


def _rho(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Spearman ρ: scipy.stats.spearmanr for one pair; for a batch of resamples, the Pearson correlation of
    each row's ranks (scipy.stats.rankdata, ties averaged), which is what spearmanr computes."""
    from scipy.stats import rankdata, spearmanr

    if x.ndim == 1:
        return spearmanr(x, y).statistic
    rx = rankdata(x, axis=-1)
    ry = rankdata(y, axis=-1)
    rx -= rx.mean(axis=-1, keepdims=True)
    ry -= ry.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (rx * ry).sum(axis=-1) / np.sqrt((rx * rx).sum(axis=-1) * (ry * ry).sum(axis=-1))
    return np.nan_to_num(rho, nan=0.0)


def _ci(stat, x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    from scipy.stats import bootstrap

    if len(x) < 4:
        return (math.nan, math.nan)
    res = bootstrap(
        (x, y),
        stat,
        paired=True,
        vectorized=True,
        n_resamples=resamples,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    lo, hi = res.confidence_interval
    return (float(lo), float(hi))


def top_k_overlap(proxy, target, k: int) -> float:
    """|proxy's top k ∩ target's top k| / k (ties broken by panel order)."""
    proxy, target = np.asarray(proxy, dtype=np.float64), np.asarray(target, dtype=np.float64)
    k = min(k, len(proxy))
    a = set(np.argsort(-proxy, kind="stable")[:k].tolist())
    b = set(np.argsort(-target, kind="stable")[:k].tolist())
    return len(a & b) / k


def rank_agreement(
    proxy: list[float], target: list[float], *, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """τ, ρ (with bootstrap 95 % CIs), top-1 in target's top-3, top-3 overlap, for paired scores."""
    x = np.asarray(proxy, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"proxy and target need one score per loss each, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"rank agreement needs at least 3 losses, got {len(x)}")
    # scipy warns about resamples whose ranks are all tied; they are handled above.
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau, rho = float(_tau(x, y)), float(_rho(x, y))
        tau_ci = _ci(_tau, x, y, resamples, seed)
        rho_ci = _ci(_rho, x, y, resamples, seed)
    best = int(np.argmax(x))
    target_top3 = set(np.argsort(-y, kind="stable")[:3].tolist())
    return {
        "n": len(x),
        "kendall_tau": tau,
        "kendall_tau_ci": tau_ci,
        "spearman_rho": rho,
        "spearman_rho_ci": rho_ci,
        "top1_in_target_top3": best in target_top3,
        "top3_overlap": top_k_overlap(x, y, 3),
    }


def tau_over_losses_and_seeds(
    proxy: list[list[float]], target: list[list[float]], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile interval of Kendall τ between the seed-mean scores of two tasks, resampling the losses
    (paired) and, independently on each task, the seeds: both the choice of panel and the seed luck of each
    training move τ. `proxy` / `target`: AP per loss, per seed."""
    x = np.asarray(proxy, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) < 4:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    xs = np.empty((resamples, len(x)))
    ys = np.empty((resamples, len(y)))
    for i in range(resamples):
        losses = rng.integers(0, len(x), len(x))
        sx = rng.integers(0, x.shape[1], x.shape[1])
        sy = rng.integers(0, y.shape[1], y.shape[1])
        xs[i], ys[i] = x[losses][:, sx].mean(1), y[losses][:, sy].mean(1)
    taus = _tau(xs, ys)  # every resample at once; one with every rank tied counts as no agreement (0)
    lo, hi = np.percentile(taus, [2.5, 97.5])
    return (float(lo), float(hi))


def noise_ceiling(aps: list[list[float]]) -> float:
    """How well a task agrees with itself: the mean Kendall τ between the panel's ranking on one part of its
    seeds and on the rest, over every split of the seeds into two non-empty parts (NaN with one seed). No
    proxy can be expected to agree with a target better than the target's own seeds agree."""
    import itertools

    from scipy.stats import kendalltau

    y = np.asarray(aps, dtype=np.float64)
    n = y.shape[1] if y.ndim == 2 else 0
    taus = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(1, n // 2 + 1):
            for left in itertools.combinations(range(n), k):
                right = [i for i in range(n) if i not in left]
                t = kendalltau(y[:, list(left)].mean(1), y[:, right].mean(1)).statistic
                taus.append(0.0 if t != t else t)
    return float(np.mean(taus)) if taus else math.nan
