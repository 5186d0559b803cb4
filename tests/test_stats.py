"""Paired comparisons over seeds against hand-computed values, and where the old rule and the new differ."""

from __future__ import annotations

import math

import pytest

from autoloss.stats import describe_gain, paired_comparison


def test_t_interval_and_p_value_by_hand():
    # diffs 0.01, 0.02, 0.035: mean 0.021667, sd 0.012583, se = sd / sqrt(3) = 0.0072648;
    # t(0.975, df 2) = 4.302653, so the half-width is 0.031258.
    g = paired_comparison([0.11, 0.122, 0.09], [0.10, 0.102, 0.055])
    assert g["n"] == 3
    assert g["mean"] == pytest.approx(0.0216667, abs=1e-6)
    assert g["std"] == pytest.approx(0.0125831, abs=1e-6)
    assert g["ci"][0] == pytest.approx(0.0216667 - 0.0312584, abs=1e-6)
    assert g["ci"][1] == pytest.approx(0.0216667 + 0.0312584, abs=1e-6)
    # t = mean / se = 2.98243 on 2 df: two-sided p = 0.096438.
    assert g["p_value"] == pytest.approx(0.096438, abs=1e-5)
    # Every seed positive: the exact sign-flip p is 2 of the 8 sign patterns.
    assert g["p_sign_flip"] == pytest.approx(0.25)


def test_the_old_rule_said_beyond_noise_where_the_interval_does_not_exclude_zero():
    g = paired_comparison([0.11, 0.122, 0.09], [0.10, 0.102, 0.055])
    # Old rule: a win on every seed and mean > 2 SE (0.02167 > 0.01453) -> "beyond noise".
    se = g["std"] / math.sqrt(3)
    assert all(d > 0 for d in g["diffs"]) and g["mean"] > 2 * se
    # New rule: the 95 % interval includes 0.
    assert g["ci"][0] < 0 < g["ci"][1]
    assert g["verdict"] == "no clear difference" and g["beyond_noise"] is False


def test_two_seeds_are_too_few_to_tell_however_large_the_gain():
    g = paired_comparison([0.30, 0.31], [0.10, 0.10])
    assert g["verdict"] == "too few seeds to tell" and not g["beyond_noise"]
    assert g["p_sign_flip"] == pytest.approx(0.5)  # 2 of 4 patterns are as extreme
    one = paired_comparison([0.3], [0.1])
    assert one["verdict"] == "too few seeds to tell" and math.isnan(one["ci"][0])
    assert "1 seed" in describe_gain(one)


def test_clear_gains_and_losses_with_four_seeds():
    # diffs 0.05, 0.06, 0.055, 0.058: mean 0.05575, sd 0.004349, t(0.975, 3) = 3.182446 -> ±0.006920.
    g = paired_comparison([0.15, 0.16, 0.155, 0.158], [0.1, 0.1, 0.1, 0.1])
    assert g["ci"][0] == pytest.approx(0.05575 - 0.006920, abs=2e-6)
    assert g["verdict"] == "better" and g["beyond_noise"]
    assert g["p_sign_flip"] == pytest.approx(2 / 16)
    worse = paired_comparison([0.1, 0.1, 0.1, 0.1], [0.15, 0.16, 0.155, 0.158])
    assert worse["verdict"] == "worse" and worse["beyond_noise"]
    assert worse["ci"][1] == pytest.approx(-g["ci"][0], abs=1e-9)


def test_mixed_signs_sign_flip_p_by_hand():
    # diffs +3, +1, -1 (observed sum 3). The 8 sign patterns of (3, 1, 1) sum to 5, 3, 3, 1, -1, -3, -3, -5:
    # six have |sum| >= 3, so p = 6 / 8.
    g = paired_comparison([3.0, 1.0, -1.0], [0.0, 0.0, 0.0])
    assert g["p_sign_flip"] == pytest.approx(0.75)


def test_identical_results_and_bad_input():
    same = paired_comparison([0.2, 0.3, 0.4], [0.2, 0.3, 0.4])
    assert same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0 and same["verdict"] == "no clear difference"
    shifted = paired_comparison([0.3, 0.4, 0.5], [0.2, 0.3, 0.4])  # the same gain on every seed
    assert shifted["verdict"] == "better"
    with pytest.raises(ValueError, match="equal seed lists"):
        paired_comparison([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="at least one seed"):
        paired_comparison([], [])


def test_describe_gain_reads_as_a_sentence():
    text = describe_gain(paired_comparison([0.11, 0.122, 0.09], [0.10, 0.102, 0.055]))
    assert text == "+0.0217 [95 % CI -0.0096, +0.0529], p = 0.096 (3 seeds): no clear difference"
