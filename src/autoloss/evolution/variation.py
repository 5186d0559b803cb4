"""Variation operators, typed by branch: every offspring stays in its branch's space.

Each node of a tree has a shape kind (scalar / class / row, see `spaces.branches`); an operator only
swaps a subtree for another of the same kind, so offspring always satisfy the shape rules. All
randomness comes from the `random.Random` passed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from autoloss.errors import ExprError
from autoloss.expr.tree import Expr, const
from autoloss.ops import OPS, SAMPLE_CONSTANTS
from autoloss.spaces.branches import CLASS, SCALAR, Branch, check_shapes, kind_of
from autoloss.spaces.generate import TreeLimits, random_tree


def _kinds(tree: Expr, br: Branch) -> list[tuple[tuple[int, ...], Expr, str]]:
    return [(path, node, kind_of(node, br)) for path, node in tree.nodes()]


def crossover(a: Expr, b: Expr, br: Branch, rng: random.Random) -> Expr:
    """Subtree crossover: a subtree of `a` replaced by a subtree of `b` of the same kind."""
    path, _, kind = rng.choice(_kinds(a, br))
    donors = [node for _, node, k in _kinds(b, br) if k == kind]
    if not donors:
        return a
    return a.replace(path, rng.choice(donors))


def point_mutation(tree: Expr, br: Branch, rng: random.Random) -> Expr:
    """Node replacement: an operator by another of the same arity and shape behaviour, an input by
    another input, a constant by another constant."""
    path, node, _ = rng.choice(_kinds(tree, br))
    if node.is_const:
        return tree.replace(
            path, const(rng.choice([c for c in SAMPLE_CONSTANTS if c != node.value] or [1.0]))
        )
    if node.is_input:
        return tree.replace(path, Expr(rng.choice(br.inputs)))
    old = OPS[node.head]
    arg_kinds = [kind_of(a, br) for a in node.args]
    choices = [
        o.name
        for o in OPS.values()
        if o.name in br.ops
        and o.arity == old.arity
        and o.reduces_classes == old.reduces_classes
        and (not o.needs_classes or arg_kinds[0] == CLASS)
        and o.name != old.name
    ]
    if not choices:
        return tree
    return tree.replace(path, Expr(rng.choice(choices), node.args))


def insertion(tree: Expr, br: Branch, rng: random.Random, limits: TreeLimits) -> Expr:
    """Wrap a subtree in an operator: unary, or binary with a small new subtree of the same kind."""
    path, node, kind = rng.choice(_kinds(tree, br))
    if rng.random() < 0.5:
        unary = [n for n in br.ops if OPS[n].arity == 1 and (not OPS[n].needs_classes or kind == CLASS)]
        return tree.replace(path, Expr(rng.choice(sorted(unary)), (node,)))
    binary = sorted(n for n in br.ops if OPS[n].arity == 2 and not OPS[n].reduces_classes)
    other = random_tree(
        br, rng, rng.randint(1, 2), "grow", kind=kind if kind != SCALAR else br.input_kind, limits=limits
    )
    args = (node, other) if rng.random() < 0.5 else (other, node)
    return tree.replace(path, Expr(rng.choice(binary), args))


def hoist(tree: Expr, br: Branch, rng: random.Random) -> Expr:
    """Deletion: replace a node by one of its descendants of the same kind (shrinks the tree)."""
    inner = [(p, n, k) for p, n, k in _kinds(tree, br) if n.args]
    if not inner:
        return tree
    path, node, kind = rng.choice(inner)
    below = [n for p, n, k in _kinds(node, br) if p and k == kind]
    if not below:
        return tree
    return tree.replace(path, rng.choice(below))


def subtree_replacement(tree: Expr, br: Branch, rng: random.Random, limits: TreeLimits) -> Expr:
    path, _, kind = rng.choice(_kinds(tree, br))
    if kind == SCALAR:
        return tree.replace(path, const(rng.choice(SAMPLE_CONSTANTS)))
    return tree.replace(path, random_tree(br, rng, rng.randint(1, 3), "grow", kind=kind, limits=limits))


def constant_change(tree: Expr, br: Branch, rng: random.Random) -> Expr:
    consts = [p for p, n in tree.nodes() if n.is_const]
    if not consts:
        return point_mutation(tree, br, rng)
    path = rng.choice(consts)
    current = tree.at(path).value
    return tree.replace(path, const(rng.choice([c for c in SAMPLE_CONSTANTS if c != current] or [1.0])))


def _typed(fn: Callable[..., Expr]) -> Callable[..., Expr]:
    """Keep the parent when a change would break a shape rule the kinds cannot see locally (a constant
    that lands under Softmax, say): the caller draws again."""

    def wrapped(tree: Expr, br: Branch, *args) -> Expr:
        child = fn(tree, br, *args)
        try:
            check_shapes(child, br)
        except ExprError:
            return tree
        return child

    wrapped.__name__ = fn.__name__
    return wrapped


def typed_crossover(a: Expr, b: Expr, br: Branch, rng: random.Random) -> Expr:
    child = crossover(a, b, br, rng)
    try:
        check_shapes(child, br)
    except ExprError:
        return a
    return child


MUTATIONS: dict[str, Callable[..., Expr]] = {
    "point": _typed(lambda t, br, rng, lim: point_mutation(t, br, rng)),
    "insertion": _typed(insertion),
    "hoist": _typed(lambda t, br, rng, lim: hoist(t, br, rng)),
    "subtree": _typed(subtree_replacement),
    "constant": _typed(lambda t, br, rng, lim: constant_change(t, br, rng)),
}


def offspring(
    parents: list[Expr],
    br: Branch,
    rng: random.Random,
    count: int,
    limits: TreeLimits,
    crossover_rate: float = 0.3,
    max_tries: int = 20,
) -> list[Expr]:
    """`count` children of `parents` within the limits (a child that breaks them is redrawn)."""
    if not parents:
        raise ValueError("offspring needs at least one parent")
    names = sorted(MUTATIONS)
    out: list[Expr] = []
    for _ in range(count):
        child = parents[0]
        for _ in range(max_tries):
            a = rng.choice(parents)
            if len(parents) > 1 and rng.random() < crossover_rate:
                child = typed_crossover(a, rng.choice(parents), br, rng)
            else:
                child = MUTATIONS[rng.choice(names)](a, br, rng, limits)
            if child.depth <= limits.max_depth and child.size <= limits.max_size and child != a:
                break
        check_shapes(child, br)  # typed operators guarantee this; a failure here is a bug, not bad input
        out.append(child)
    return out
