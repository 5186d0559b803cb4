"""Algebraic rewriting before code generation: a tree in, an equivalent tree that runs fewer kernels out.

Compiled losses run on large detection tensors, where every elementwise op costs one pass over memory
forward and usually one or more backward (`Mul(a,a)` is two products and an accumulation backward). The
rules below remove passes without changing what is computed. The result may hold two codegen-only heads
(`FUSED`: `Square`, `LogSigmoid`); it is an emit plan for `autoloss.expr.codegen`, not a search tree (its
`key` and `cost` are not defined), and it is a pure, deterministic function of the input tree.

Why each rule is safe, in float32 and float64 alike (IEEE round-to-nearest is sign-symmetric, so negation
commutes exactly with +, -, *, /). "Exact" below means bit-identical values, zero signs, infinities and NaNs
included, and bit-identical gradient contributions along every path; where several paths meet in one
input, autograd may add their contributions in another order, so the gradient can differ in the last bit
(within float32 rounding, which is what the tests hold every rule to).

- `neg-neg`: Neg(Neg(a)) -> a. Exact.
- `add-neg`: Add(a, Neg(b)) -> Sub(a, b), Add(Neg(a), b) -> Sub(b, a). IEEE defines a - b as a + (-b). Exact.
- `sub-neg`: Sub(a, Neg(b)) -> Add(a, b). Same reason. Exact.
- `lift-neg`: Mul(Neg(a), b) -> Neg(Mul(a, b)) (either side; both sides cancel), Div(Neg(a), b) ->
  Neg(Div(a, b)). The sign of a product or quotient is the XOR of the signs. Exact. It only moves a Neg
  up, where `add-neg`, `sub-neg` or `neg-neg` can absorb it. (Div(a, Neg(b)) is not lifted: the guard adds
  1e-20 to the denominator, and -b + 1e-20 is not -(b + 1e-20).)
- `mul-one`: Mul(a, 1), Mul(1, a), Div(a, 1) -> a. Multiplying or dividing by 1 is exact (1 + 1e-20 is 1
  in both precisions). Exact.
- `square`: Mul(a, a) -> Square(a) (`torch.square`). Values exact (pow 2 is a * a); the gradient
  g * (2a) equals g*a + g*a exactly (doubling is exact), at one pass fewer.
- `softplus-neg`: Softplus(Neg(a)) -> Neg(LogSigmoid(a)). The same function (log(1 + e^-a) = -log
  sigmoid(a)) in one fused kernel pair instead of two, and the Neg usually folds away. Not bit-identical:
  for a >= 0 and a < -20 torch computes the same expression, in between the two round differently; on a
  dense float32 grid over [-120, 120] (and at 0, ±20, ±88, ±inf, NaN) values differ by at most 1.5e-7 and
  gradients by at most 2.3e-7 relative, with the same finite/non-finite pattern (one zero sign differs, at
  a = +inf only).

Rules not applied, and why (each was measured or proved wrong for this project's guarded operators):

- Sub(1, Sig(x)) -> Sig(Neg(x)): in float32 1 - sigmoid(x) is exactly 0 for x >~ 17 while sigmoid(-x) is
  not, so a guarded Log (or Div, Sqrt) downstream gives different values and gradients. It would not be
  faster either: Sig(x) is usually shared, so 1 - p is one pass while sigmoid(-x) is two.
- Log(Sig(x)) -> LogSigmoid(x): Log is log(x + 1e-20), which floors at log(1e-20) ~ -46 where sigmoid
  underflows; logsigmoid(x) = x keeps falling. They differ beyond float32 tolerance for x <~ -35
  (Log(Sig(Mul(3,X))) on a saturated probe logit). Log(Softmax(x)) -> log_softmax fails the same way.
- Constant folding: a constant-only subtree is evaluated in the inputs' dtype on purpose (float64 folding
  would round differently), and costs only 0-d work.
- Reassociation, distribution and fused multiply-add (addcmul): not exact, and addcmul was measured
  mixed (one pass saved forward, one added backward by its scaled-gradient formula).

A rewrite is kept only when it does not emit more ops than the tree it came from (a Neg lifted from a
shared subtree can cost one): `rewrite` tries all rules, then all but `lift-neg`, then none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from autoloss.expr.tree import Expr


@dataclass(frozen=True)
class Fused:
    """A codegen-only head the rules may produce; its source is a template like `Op.source`, using only
    `torch`, so exported files (which bind torch and the registry helpers) can carry it unchanged."""

    name: str
    arity: int
    source: str
    doc: str


FUSED: dict[str, Fused] = {
    f.name: f
    for f in (
        Fused("Square", 1, "torch.square({0})", "a * a"),
        Fused("LogSigmoid", 1, "torch.nn.functional.logsigmoid({0})", "log(sigmoid(a)), unguarded"),
    )
}

Rule = Callable[[Expr], "Expr | None"]
_ONE = 1.0


def _neg(a: Expr) -> Expr:
    return Expr("Neg", (a,))


def _is(node: Expr, head: str) -> bool:
    return node.head == head and bool(node.args)


def _is_one(node: Expr) -> bool:
    return node.is_const and node.value == _ONE


def _neg_neg(n: Expr) -> Expr | None:
    if _is(n, "Neg") and _is(n.args[0], "Neg"):
        return n.args[0].args[0]
    return None


def _add_neg(n: Expr) -> Expr | None:
    if _is(n, "Add"):
        a, b = n.args
        if _is(b, "Neg"):
            return Expr("Sub", (a, b.args[0]))
        if _is(a, "Neg"):
            return Expr("Sub", (b, a.args[0]))
    return None


def _sub_neg(n: Expr) -> Expr | None:
    if _is(n, "Sub") and _is(n.args[1], "Neg"):
        return Expr("Add", (n.args[0], n.args[1].args[0]))
    return None


def _lift_neg(n: Expr) -> Expr | None:
    if _is(n, "Mul"):
        a, b = n.args
        if _is(a, "Neg") and _is(b, "Neg"):
            return Expr("Mul", (a.args[0], b.args[0]))
        if _is(a, "Neg"):
            return _neg(Expr("Mul", (a.args[0], b)))
        if _is(b, "Neg"):
            return _neg(Expr("Mul", (a, b.args[0])))
    if _is(n, "Div") and _is(n.args[0], "Neg"):
        return _neg(Expr("Div", (n.args[0].args[0], n.args[1])))
    return None


def _mul_one(n: Expr) -> Expr | None:
    if _is(n, "Mul"):
        a, b = n.args
        if _is_one(b):
            return a
        if _is_one(a):
            return b
    if _is(n, "Div") and _is_one(n.args[1]):
        return n.args[0]
    return None


def _square(n: Expr) -> Expr | None:
    if _is(n, "Mul") and n.args[0] == n.args[1]:
        return Expr("Square", (n.args[0],))
    return None


def _softplus_neg(n: Expr) -> Expr | None:
    if _is(n, "Softplus") and _is(n.args[0], "Neg"):
        return _neg(Expr("LogSigmoid", (n.args[0].args[0],)))
    return None


# Order matters only for speed of reaching the fixpoint: the sign rules first, so that Mul(Neg(a), Neg(a))
# becomes Mul(a, a) before `square` looks at it.
RULES: dict[str, Rule] = {
    "neg-neg": _neg_neg,
    "add-neg": _add_neg,
    "sub-neg": _sub_neg,
    "lift-neg": _lift_neg,
    "mul-one": _mul_one,
    "square": _square,
    "softplus-neg": _softplus_neg,
}


def apply_rules(expr: Expr, rules: Iterable[Rule]) -> Expr:
    """`expr` with `rules` applied bottom-up until none matches anywhere. Terminates: every rule either
    shrinks the tree or moves a Neg towards the root, and none moves one down."""
    rules = tuple(rules)
    memo: dict[Expr, Expr] = {}  # any node seen -> its normal form; normal forms map to themselves

    def norm(node: Expr) -> Expr:
        hit = memo.get(node)
        if hit is not None:
            return hit
        out = node
        if node.args:
            args = tuple(norm(a) for a in node.args)
            # An unchanged subtree is kept as it is: no new node, and its cached properties stay.
            if any(new is not old for new, old in zip(args, node.args, strict=True)):
                out = Expr(node.head, args)
            for rule in rules:
                new = rule(out)
                if new is not None:
                    out = norm(new)  # a rule builds new interior nodes, which may match again
                    break
        memo[node] = memo[out] = out
        return out

    return norm(expr)


def emitted_ops(expr: Expr) -> int:
    """Operations the code generator emits for `expr`: one per distinct interior subtree."""
    seen: set[Expr] = set()
    stack = [expr]
    while stack:  # distinct nodes only: a shared subtree is walked once (no paths, unlike Expr.nodes)
        node = stack.pop()
        if node.args and node not in seen:
            seen.add(node)
            stack.extend(node.args)
    return len(seen)


def rewrite(expr: Expr, rules: dict[str, Rule] | None = None) -> Expr:
    """The emit plan for `expr`: all `rules` (default `RULES`), else all but `lift-neg`, else `expr` itself,
    whichever first emits no more ops than `expr`."""
    rules = RULES if rules is None else rules
    base = emitted_ops(expr)
    for chosen in (rules, {k: r for k, r in rules.items() if k != "lift-neg"}):
        out = apply_rules(expr, chosen.values())
        if emitted_ops(out) <= base:
            return out
    return expr


def fired(expr: Expr, rules: dict[str, Rule] | None = None) -> list[str]:
    """The names of the rules that change `expr` when applied alone (for tests and reports)."""
    rules = RULES if rules is None else rules
    return [name for name, rule in rules.items() if apply_rules(expr, [rule]) != expr]
