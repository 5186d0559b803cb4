"""On the search's own random trees the pipeline rejects at least 99 % (the paper's funnel figure)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from autoloss.checks import screen
from autoloss.loss import Loss
from autoloss.spaces.branches import BRANCHES
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half

TREES = 2000  # the benchmark does 10,000; this many keeps the test to a few seconds per branch


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_pipeline_rejects_99_percent_of_random_trees(branch):
    trees = ramped_half_and_half(BRANCHES[branch], random.Random(7), TREES, TreeLimits(max_depth=6))
    stages = Counter(screen(Loss(tree, branch)).stage for tree in trees)
    # Every filter does some of the work, and every tree ends at a known stage.
    assert set(stages) <= {"validity", "cpv", "mos", "passed"}
    assert stages["validity"] > 0 and stages["cpv"] > 0
    assert stages["passed"] <= 0.01 * TREES, stages
