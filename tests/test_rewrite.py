"""The codegen rewrites keep values and gradients: each rule on a hand-built case, then every branch's random
trees and the named losses, rewritten vs as written, on random inputs and on the saturated validity probes.

Tolerance (float32): values and gradients agree to rtol 1e-5 plus atol 1e-6 times the array's scale (its
largest finite magnitude, at least 1), and the finite/non-finite pattern is identical. The exact rules are
checked bit for bit on their own cases.
"""

from __future__ import annotations

import random

import pytest
import torch

from autoloss.checks.config import ProbeConfig
from autoloss.checks.probes import box_terms, validity_probe
from autoloss.expr.codegen import compile_expr
from autoloss.expr.parse import parse
from autoloss.expr.rewrite import FUSED, RULES, Fused, emitted_ops, fired, rewrite
from autoloss.expr.tree import Expr
from autoloss.spaces import BRANCHES, NAMED
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half

RTOL, ATOL = 1e-5, 1e-6
TREES_PER_BRANCH = 300


# --- each rule on a hand-built case ------------------------------------------------------------------

# (rule, tree, its rewrite, exact?) -- exact rules give bit-identical values (gradients: see the module
# docstring of autoloss.expr.rewrite), `softplus-neg` agrees within tolerance.
CASES = [
    ("neg-neg", "Neg(Neg(Sig(X)))", "Sig(X)", True),
    ("add-neg", "Add(X,Neg(Sig(X)))", "Sub(X,Sig(X))", True),
    ("add-neg", "Add(Neg(Sig(X)),X)", "Sub(X,Sig(X))", True),
    ("sub-neg", "Sub(X,Neg(Sig(X)))", "Add(X,Sig(X))", True),
    ("lift-neg", "Add(X,Mul(Neg(X),Sig(X)))", "Sub(X,Mul(X,Sig(X)))", True),
    ("lift-neg", "Add(X,Div(Neg(X),Sig(X)))", "Sub(X,Div(X,Sig(X)))", True),
    ("lift-neg", "Mul(Neg(X),Neg(Sig(X)))", "Mul(X,Sig(X))", True),
    ("mul-one", "Add(Mul(X,1),Div(Sig(X),1))", "Add(X,Sig(X))", True),
    ("square", "Mul(Sig(X),Sig(X))", "Square(Sig(X))", True),
    ("square", "Mul(Neg(Tanh(X)),Neg(Tanh(X)))", "Square(Tanh(X))", True),
    ("softplus-neg", "Softplus(Neg(X))", "Neg(LogSigmoid(X))", False),
    ("softplus-neg", "Add(Sig(X),Softplus(Neg(X)))", "Sub(Sig(X),LogSigmoid(X))", False),
]


def _grid() -> torch.Tensor:
    edges = [0.0, -0.0, 1e-30, -1e-30, 17.0, -17.0, 20.0, -20.0, 88.0, -88.0, 100.0, -100.0]
    return torch.cat([torch.linspace(-60, 60, 4001), torch.tensor(edges)])


def _value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = x.clone().requires_grad_(True)
    out = torch.broadcast_to(fn(leaf), leaf.shape)
    (grad,) = torch.autograd.grad(out.sum(), leaf, allow_unused=True)
    return out.detach(), (torch.zeros_like(leaf) if grad is None else grad)


@pytest.mark.parametrize(("rule", "text", "want", "exact"), CASES)
def test_each_rule_on_a_hand_built_case(rule, text, want, exact):
    tree = parse(text)
    assert rule in fired(tree)
    got = rewrite(tree)
    assert got.text == want
    x = _grid()
    mine = _value_and_grad(compile_expr(tree, ["X"]), x)
    plain = _value_and_grad(compile_expr(tree, ["X"], optimize=False), x)
    (value, grad), (plain_value, plain_grad) = mine, plain
    if exact:  # bit for bit, NaNs in the same places, zero signs included
        assert torch.equal(value.isnan(), plain_value.isnan())
        ok = ~value.isnan()
        assert torch.equal(value[ok], plain_value[ok])
        assert torch.equal(value[ok].signbit(), plain_value[ok].signbit())
    _assert_close(value, plain_value, text)
    _assert_close(grad, plain_grad, f"d/dX {text}")


def test_rules_that_would_cost_an_op_are_not_kept():
    # Neg(X) is shared and nothing absorbs a lifted Neg: lifting would keep Neg(X) for Sin and add a Neg at
    # the root -- one op more -- so the tree is emitted as written.
    tree = parse("Mul(Sin(Neg(X)),Mul(Neg(X),Sig(X)))")
    assert "lift-neg" in fired(tree)
    assert rewrite(tree) == tree


def test_rewrite_is_deterministic_and_leaves_the_input_tree_alone():
    tree = parse(NAMED["focal"].text)
    before = tree.text
    assert rewrite(tree) == rewrite(parse(NAMED["focal"].text))
    assert tree.text == before


def test_rules_fire_on_the_named_losses():
    # The point of the module: the detector defaults and the published losses get fewer ops.
    assert {"square", "softplus-neg"} <= set(fired(parse(NAMED["focal"].text)))
    for name in ("focal", "bce", "cse-a-reg", "cse-b-cls", "cse-b-reg"):
        tree = parse(NAMED[name].text)
        assert emitted_ops(rewrite(tree)) < emitted_ops(tree), name
    source = compile_expr(parse(NAMED["focal"].text), ["X", "Q", "PY", "NY"]).__doc__
    assert source.count("torch.square") == 2 and "logsigmoid" in source and "(-X)" not in source


def test_fused_heads_use_only_torch():
    # Exported files bind torch and the registry helpers only, so a fused head may use nothing else.
    for fused in FUSED.values():
        assert isinstance(fused, Fused) and fused.source.startswith("torch.")


# --- registry-wide: random trees of every branch, and the named losses --------------------------------


def _assert_close(mine: torch.Tensor, plain: torch.Tensor, what: str) -> None:
    assert torch.equal(torch.isfinite(mine), torch.isfinite(plain)), f"{what}: finite pattern differs"
    assert torch.equal(mine.isnan(), plain.isnan()), f"{what}: NaN pattern differs"
    inf = torch.isinf(plain)
    assert torch.equal(mine[inf], plain[inf]), f"{what}: infinities differ"
    fin = torch.isfinite(plain)
    scale = max(plain[fin].abs().max().item() if fin.any() else 0.0, 1.0)
    torch.testing.assert_close(mine[fin], plain[fin], rtol=RTOL, atol=ATOL * scale, msg=what)


def _random_case(
    branch: str, g: torch.Generator, spread: float = 3.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(leaf, fixed inputs) on random data; logits have standard deviation `spread`."""
    n, k = 64, 4
    if branch == "reg":
        xy = torch.rand(n, 2, generator=g) * 100
        target = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 60 + 1], 1)
        return target + torch.randn(n, 4, generator=g) * 8, {"target": target}
    x = torch.randn(n, k, generator=g) * spread
    onehot = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).float()
    iou = torch.rand(n, 1, generator=g)
    if branch == "cls-softmax":
        return x, {"Y": onehot, "Z": iou.expand(n, k).contiguous()}
    onehot[: n // 4] = 0
    return x, {"Q": onehot * iou, "PY": onehot, "NY": 1 - onehot}


def _run(fn, inputs: tuple[str, ...], branch: str, leaf: torch.Tensor, fixed: dict[str, torch.Tensor]):
    pred = leaf.clone().requires_grad_(True)
    if branch == "reg":
        args = dict(zip("IUE", box_terms(pred, fixed["target"]), strict=True))
        shape: tuple[int, ...] = (pred.shape[0],)
    else:
        args = {**{k: v for k, v in fixed.items() if k != "target"}, "X": pred}
        shape = tuple(pred.shape) if branch == "cls-sigmoid" else (pred.shape[0],)
    out = torch.broadcast_to(fn(*(args[n] for n in inputs)), shape)
    grad = None
    if out.requires_grad:
        (grad,) = torch.autograd.grad(out.sum(), pred, allow_unused=True)
    return out.detach(), torch.zeros_like(pred) if grad is None else grad


def _trees(branch: str) -> list[Expr]:
    br = BRANCHES[branch]
    seed = sorted(BRANCHES).index(branch)
    trees = ramped_half_and_half(br, random.Random(500 + seed), TREES_PER_BRANCH, TreeLimits(max_depth=6))
    return trees + [parse(n.text) for n in NAMED.values() if n.branch == branch]


def _mismatches(branch: str, rules=None) -> tuple[list[str], int]:
    """Trees of `branch` whose rewritten function differs from the plain one, and how many were rewritten."""
    br = BRANCHES[branch]
    g = torch.Generator().manual_seed(7)
    probe = validity_probe(branch, ProbeConfig())
    # The probes saturate logits at +-20; wide logits (sd 40) reach where guarded Log and Div floor.
    data = [(probe.pred, probe.fixed), _random_case(branch, g), _random_case(branch, g, 40.0)]
    bad, changed = [], 0
    for tree in _trees(branch):
        if rewrite(tree, rules) == tree:
            continue
        changed += 1
        mine_fn = compile_expr(tree, br.inputs, rules=rules)
        plain_fn = compile_expr(tree, br.inputs, optimize=False)
        for leaf, fixed in data:
            try:
                for a, b in zip(
                    _run(mine_fn, br.inputs, branch, leaf, fixed),
                    _run(plain_fn, br.inputs, branch, leaf, fixed),
                    strict=True,
                ):
                    _assert_close(a, b, tree.text)
            except AssertionError:
                bad.append(tree.text)
                break
    return bad, changed


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_rewritten_trees_equal_the_plain_ones_on_random_and_probe_inputs(branch):
    bad, changed = _mismatches(branch)
    assert not bad, bad[:5]
    assert changed >= TREES_PER_BRANCH // 10  # the rules do fire on random trees, or this proves little


# Wrong rules, each looking plausible: the registry-wide check above must catch them.
def _one_minus_sig(n: Expr) -> Expr | None:  # 1 - sigmoid(x) is exactly 0 in float32 for x >~ 17
    if n.head == "Sub" and n.args[0].is_const and n.args[0].value == 1.0 and n.args[1].head == "Sig":
        return Expr("Sig", (Expr("Neg", n.args[1].args),))
    return None


def _log_sig(n: Expr) -> Expr | None:  # Log is guarded by +1e-20; logsigmoid is not
    if n.head == "Log" and n.args[0].head == "Sig":
        return Expr("LogSigmoid", n.args[0].args)
    return None


def _softplus_is_relu(n: Expr) -> Expr | None:  # only asymptotically equal
    if n.head == "Softplus":
        return Expr("Relu", n.args)
    return None


@pytest.mark.parametrize("wrong", [_one_minus_sig, _log_sig, _softplus_is_relu])
def test_a_wrong_rule_is_caught(wrong):
    bad, changed = _mismatches("cls-sigmoid", {**RULES, "wrong": wrong})
    assert changed and bad, wrong.__name__
