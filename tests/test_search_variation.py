"""Variation operators and the engine: typed offspring, limits, seeded, state round trip."""

from __future__ import annotations

import json
import random

import pytest

from autoloss.evolution.engine import Evaluated, Evolution
from autoloss.evolution.variation import MUTATIONS, hoist, offspring, point_mutation, typed_crossover
from autoloss.expr import parse
from autoloss.spaces import BRANCHES, NAMED, check_shapes
from autoloss.spaces.generate import TreeLimits

LIMITS = TreeLimits(max_depth=6, max_size=40)


def _parents(branch):
    return [parse(n.text) for n in NAMED.values() if n.branch == branch]


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_offspring_stay_in_the_branch_space_and_limits(branch):
    br = BRANCHES[branch]
    kids = offspring(_parents(branch), br, random.Random(1), 300, LIMITS)
    assert len(kids) == 300
    for k in kids:
        check_shapes(k, br)  # raises on a shape-rule violation
        assert k.ops_used <= br.ops and k.inputs <= set(br.inputs)
    within = [k for k in kids if k.depth <= LIMITS.max_depth and k.size <= LIMITS.max_size]
    assert len(within) >= 290
    assert len({k.key for k in kids}) > 150  # variation, not copies


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_each_mutation_changes_trees_and_keeps_shapes(name):
    br = BRANCHES["cls-softmax"]
    rng = random.Random(3)
    parent = parse(NAMED["cse-a-cls"].text)
    changed = 0
    for _ in range(50):
        child = MUTATIONS[name](parent, br, rng, LIMITS)
        check_shapes(child, br)
        changed += child != parent
    assert changed >= 25


def test_point_mutation_keeps_arity_and_hoist_shrinks():
    br = BRANCHES["reg"]
    rng = random.Random(0)
    tree = parse("Add(Sub(1,Div(I,U)),Div(Sub(E,U),E))")
    for _ in range(30):
        assert point_mutation(tree, br, rng).size == tree.size
        assert hoist(tree, br, rng).size <= tree.size


def test_crossover_swaps_same_kind_subtrees():
    br = BRANCHES["cls-softmax"]
    a, b = parse(NAMED["ce"].text), parse(NAMED["cse-a-cls"].text)
    rng = random.Random(5)
    kids = {typed_crossover(a, b, br, rng) for _ in range(40)}
    for k in kids:
        check_shapes(k, br)
    assert len(kids) > 3


def test_same_seed_same_offspring():
    br = BRANCHES["cls-sigmoid"]
    one = offspring(_parents("cls-sigmoid"), br, random.Random(9), 100, LIMITS)
    two = offspring(_parents("cls-sigmoid"), br, random.Random(9), 100, LIMITS)
    assert one == two


def _ev(text, key, mos, ap, status, rungs=None):
    """A candidate trained at rung 0 (one seed) with mAP `ap`, or with the given rung history."""
    return Evaluated(text, key, 0, mos, status, rungs=rungs or {"0": [ap]})


def test_a_higher_rung_outranks_a_better_score_on_a_lower_one_and_the_default_never_breeds():
    evo = Evolution(BRANCHES["reg"], random.Random(0), offspring_count=20, parents=2, limits=LIMITS)
    evo.tell(_ev("Div(I,U)", "k1", 0.5, 0.40, "ok"))  # best at rung 0, never promoted
    evo.tell(_ev("Sub(E,I)", "k2", 0.7, 0.0, "ok", rungs={"0": [0.30], "1": [0.10, 0.20]}))
    evo.tell(_ev("default", "reg:default", None, 0.0, "ok", rungs={"0": [0.35], "1": [0.30, 0.28]}))
    ranked = [r.text for r in evo.best(3)]
    # Rung 1 first (compared on its own seeds: default 0.29 > 0.15), then rung 0.
    assert ranked == ["default", "Sub(E,I)", "Div(I,U)"]
    assert evo.best(1)[0].ap == pytest.approx(0.29)
    assert evo.close_generation() == ["Sub(E,I)", "Div(I,U)"]  # the stock loss has no tree to breed


def test_engine_parents_are_best_so_far_regardless_of_arrival_order():
    def engine():
        return Evolution(BRANCHES["reg"], random.Random(0), offspring_count=20, parents=2, limits=LIMITS)

    results = [
        _ev("Sub(1,Div(I,U))", "k1", 0.9, 0.10, "ok"),
        _ev("Div(I,U)", "k2", 0.5, 0.30, "ok"),
        _ev("Log(I)", "k3", 0.8, 0.0, "diverged"),
        _ev("Sub(E,I)", "k4", 0.7, 0.20, "ok"),
    ]
    a, b = engine(), engine()
    for r in results:
        a.tell(r)
    for r in reversed(results):
        b.tell(r)
    assert a.close_generation() == b.close_generation() == ["Div(I,U)", "Sub(E,I)"]


def test_engine_state_round_trips_through_json():
    a = Evolution(BRANCHES["reg"], random.Random(4), offspring_count=30, parents=2, limits=LIMITS)
    a.ask()
    a.tell(_ev("Sub(1,Div(I,U))", "k1", 0.9, 0.1, "ok"))
    a.close_generation()
    state = json.loads(json.dumps(a.state_dict()))
    b = Evolution(BRANCHES["reg"], random.Random(99), offspring_count=30, parents=2, limits=LIMITS)
    b.load_state_dict(state)
    assert a.ask() == b.ask()  # same RNG state, same parents: the same next generation


def test_first_generation_contains_the_named_losses():
    evo = Evolution(BRANCHES["cls-softmax"], random.Random(0), offspring_count=50, parents=2, limits=LIMITS)
    texts = {e.text for e in evo.ask()}
    assert NAMED["ce"].text in texts and NAMED["cse-a-cls"].text in texts


def test_random_strategy_draws_fresh_trees_every_generation():
    evo = Evolution(
        BRANCHES["reg"], random.Random(0), offspring_count=40, parents=2, limits=LIMITS, strategy="random"
    )
    first = evo.ask()
    assert NAMED["giou"].text not in {e.text for e in first}  # no seeding with the named losses
    evo.tell(_ev("Sub(1,Div(I,U))", "k1", 0.9, 0.1, "ok"))
    evo.close_generation()
    second = evo.ask()
    assert not {e.key for e in second} & {parse("Sub(1,Div(I,U))").key}
    assert len({e.key for e in second}) > 20
