"""The functional key, the pipeline's options and its worker-friendly batch form."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from autoloss import Loss
from autoloss.checks import CheckConfig, ScreenResult, Verdict, functional_key, screen, screen_texts
from autoloss.checks.equivalence import quantise
from autoloss.checks.pipeline import DUPLICATE


def key(text, branch):
    return functional_key(Loss.resolve(text, branch))


@pytest.mark.parametrize(
    ("a", "b", "branch"),
    [
        ("Add(X,PY)", "Add(PY,X)", "cls-sigmoid"),
        ("Neg(Neg(Mul(PY,Softplus(Neg(X)))))", "Mul(PY,Softplus(Neg(X)))", "cls-sigmoid"),
        ("Neg(Dot(Y,Log(Softmax(X))))", "Dot(Neg(Log(Softmax(X))),Y)", "cls-softmax"),
        ("Neg(Dot(Y,Log(Softmax(X))))", "Neg(Dot(Y,Log(Softmax(Mul(1,X)))))", "cls-softmax"),
        ("Sub(1,Div(I,U))", "Add(1,Neg(Div(I,U)))", "reg"),
        ("Sub(1,Div(I,U))", "Add(Neg(Div(I,U)),Div(E,E))", "reg"),
        # Two different float32 formulas of log-sigmoid: equal up to rounding, which the key absorbs.
        ("Neg(Mul(PY,Log(Sig(X))))", "Mul(PY,Softplus(Neg(X)))", "cls-sigmoid"),
        # A constant offset: other values, the same gradient, the same training.
        ("Add(Sub(1,Div(I,U)),3)", "Sub(1,Div(I,U))", "reg"),
        ("Sub(Div(Sub(E,U),E),Div(I,U))", "Add(Sub(1,Div(I,U)),Div(Sub(E,U),E))", "reg"),  # giou - 1
        ("Add(2,Mul(PY,Softplus(Neg(X))))", "Mul(PY,Softplus(Neg(X)))", "cls-sigmoid"),
        ("Add(Neg(Dot(Y,Log(Softmax(X)))),3)", "Neg(Dot(Y,Log(Softmax(X))))", "cls-softmax"),
        # A double negation and commuted arguments of the whole loss.
        ("Neg(Neg(Add(Mul(NY,Softplus(X)),Mul(PY,Softplus(Neg(X))))))", "bce", "cls-sigmoid"),
    ],
)
def test_equivalent_losses_share_a_key(a, b, branch):
    assert key(a, branch) == key(b, branch)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("ce", "cse-a-cls"),
        ("focal", "bce"),
        ("iou", "giou"),
        ("giou", "cse-a-reg"),
        ("cse-a-reg", "cse-b-reg"),
    ],
)
def test_different_losses_get_different_keys(a, b):
    assert functional_key(Loss.named(a)) != functional_key(Loss.named(b))


def test_key_separates_scaled_losses_and_branches():
    # A positive rescaling changes the effective learning rate: a different training, a different key.
    assert key("Sub(1,Div(I,U))", "reg") != key("Mul(2,Sub(1,Div(I,U)))", "reg")
    assert key("focal", "cls-sigmoid") != key(f"Mul(3,{Loss.named('focal').text})", "cls-sigmoid")
    assert key("Sub(1,Div(I,U))", "reg") != key("Add(Sub(1,Div(I,U)),Div(I,E))", "reg")
    assert key("Mul(PY,X)", "cls-sigmoid").startswith("cls-sigmoid:")


def test_quantise_handles_nan_inf_and_negative_zero():
    scale, codes = quantise(np.array([-0.0, 0.0, 1.0, np.nan, np.inf, -np.inf]), 4)
    assert scale == "1.000e+00"
    assert codes[0] == codes[1] == 0  # -0.0 and 0.0 are one value
    assert len(set(codes[3:].tolist())) == 3 and codes[2] == 10_000
    assert quantise(np.array([np.nan]), 4)[0] == "1.000e+00"  # no finite value: a neutral scale


def test_cpv_and_mos_can_be_skipped():
    loss = Loss.named("giou")
    assert [v.name for v in screen(loss, mos=False).verdicts] == ["validity", "dedup", "cpv"]
    assert [v.name for v in screen(loss, cpv=False, mos=False).verdicts] == ["validity", "dedup"]
    skipped = screen(Loss.parse("Sub(U,I)", "reg"), cpv=False, mos=False)
    assert skipped.passed and skipped.stage == "passed" and skipped.mos_score is None


def test_seen_keys_stop_duplicates_at_dedup():
    seen: set[str] = set()
    first = screen(Loss.parse("Sub(1,Div(I,U))", "reg"), mos=False, seen_keys=seen)
    assert first.passed and first.key in seen
    again = screen(Loss.parse("Add(1,Neg(Div(I,U)))", "reg"), mos=False, seen_keys=seen)
    assert (again.passed, again.stage, again.reason) == (False, "dedup", DUPLICATE)
    assert again.key == first.key


def test_screen_texts_is_plain_data_and_never_raises():
    texts = ["giou", "Sub(1,Div(I,U))", "Add(1,Neg(Div(I,U)))", "Foo(I)", "Sub(U,I)", "Log(Softmax(X))"]
    # "giou" is not prefix text: it fails to parse, like any malformed candidate.
    out = screen_texts(texts, "reg", CheckConfig(), mos=False, seen_keys=())
    assert [r["text"] for r in out] == texts
    assert [r["stage"] for r in out] == ["validity", "passed", "dedup", "validity", "cpv", "validity"]
    assert "does not parse" in out[3]["reason"] and "Foo" in out[3]["reason"]
    json.dumps(out)
    pickle.loads(pickle.dumps(out))
    # Config as plain data, too (what a worker receives).
    again = screen_texts(["Sub(1,Div(I,U))"], "reg", CheckConfig().to_dict(), mos=False)
    assert again[0]["key"] == out[1]["key"]


def test_a_crash_inside_a_filter_is_a_rejection(monkeypatch):
    import autoloss.checks.pipeline as pipeline

    def boom(loss, config, evaluation=None):
        raise RuntimeError("shape mismatch in candidate")

    monkeypatch.setattr(pipeline, "cpv_filter", boom)
    result = screen(Loss.named("giou"), mos=False)
    assert (result.passed, result.stage) == (False, "cpv")
    assert result.reason == "crashed: RuntimeError: shape mismatch in candidate"


def test_result_types_are_json_ready():
    v = Verdict("cpv", True, "ok", None, 0.001)
    assert json.loads(json.dumps(v.to_dict())) == {
        "name": "cpv", "passed": True, "reason": "ok", "score": None, "seconds": 0.001
    }  # fmt: skip
    with pytest.raises(AttributeError):
        v.passed = False  # frozen
    assert ScreenResult().stage == "validity"


def _mirror(expr):
    """The same function with the arguments of every commutative operator swapped."""
    from autoloss.expr.tree import Expr
    from autoloss.ops import OPS

    args = tuple(_mirror(a) for a in expr.args)
    if expr.is_op and OPS[expr.head].commutative:
        args = args[::-1]
    return Expr(expr.head, args)


@pytest.mark.parametrize("branch", ["cls-softmax", "cls-sigmoid", "reg"])
def test_key_is_invariant_under_commutative_swaps_of_random_trees(branch):
    import random

    from autoloss.spaces.branches import BRANCHES
    from autoloss.spaces.generate import TreeLimits, ramped_half_and_half

    trees = ramped_half_and_half(BRANCHES[branch], random.Random(3), 300, TreeLimits(max_depth=5))
    checked = 0
    for tree in trees:
        mirrored = _mirror(tree)
        if mirrored == tree or not tree.inputs:
            continue
        checked += 1
        assert functional_key(Loss(tree, branch)) == functional_key(Loss(mirrored, branch)), tree.text
    assert checked > 50
