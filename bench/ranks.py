"""What a rank-agreement interval costs: scipy's τ and ρ called once per bootstrap resample (before) against
the batched statistics of autoloss.fidelity.ranks (after), side by side on the same scores.

    .venv/bin/python bench/ranks.py [--losses 14] [--repeats 3]

Every `autoloss report` computes two of these intervals (MOS against rung-0 AP, per branch) and every
`autoloss fidelity` table one per proxy and target. Both versions get the same 2,000 resamples from
scipy.stats.bootstrap; the bench asserts the intervals agree.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy.stats import kendalltau, spearmanr

from autoloss.fidelity import ranks


def _tau_rows(x, y, axis=-1):
    if x.ndim == 1:
        return kendalltau(x, y).statistic
    return np.nan_to_num([kendalltau(a, b).statistic for a, b in zip(x, y, strict=True)], nan=0.0)


def _rho_rows(x, y, axis=-1):
    if x.ndim == 1:
        return spearmanr(x, y).statistic
    return np.nan_to_num([spearmanr(a, b).statistic for a, b in zip(x, y, strict=True)], nan=0.0)


def _timed(x, y, repeats: int) -> tuple[float, dict]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = ranks.rank_agreement(x, y)
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--losses", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=args.losses).round(2).tolist()
    y = (np.asarray(x) + rng.normal(scale=0.8, size=args.losses)).round(2).tolist()
    after, new = _timed(x, y, args.repeats)
    batched = ranks._tau, ranks._rho
    ranks._tau, ranks._rho = _tau_rows, _rho_rows
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            before, old = _timed(x, y, args.repeats)
    finally:
        ranks._tau, ranks._rho = batched
    for key in ("kendall_tau_ci", "spearman_rho_ci"):
        np.testing.assert_allclose(new[key], old[key], atol=1e-12)
    print(f"rank_agreement of {args.losses} losses, 2,000 resamples, best of {args.repeats}:")
    print("| statistic per resample | seconds |")
    print("|---|---|")
    print(f"| scipy, one call per resample (before) | {before:.3f} |")
    print(f"| batched (after) | {after:.3f} |")
    print(f"{before / after:.0f}x; the same intervals: τ {new['kendall_tau_ci']}, ρ {new['spearman_rho_ci']}")


if __name__ == "__main__":
    main()
