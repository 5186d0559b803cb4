"""Random expression trees for a branch: grow, full and ramped half-and-half (Koza).

Generation is typed by shape kind (see `branches`), so every tree it returns obeys the branch's shape
rules; the filters then judge behaviour, not syntax. Leaves are inputs with probability `p_input`
("planting" inputs: most uniformly random trees miss a needed input and are wasted).

The RNG is always passed in (`random.Random`): library code never touches global random state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from autoloss.expr.tree import Expr, const
from autoloss.ops import OPS, SAMPLE_CONSTANTS
from autoloss.spaces.branches import CLASS, ROW, Branch


@dataclass(frozen=True)
class TreeLimits:
    min_depth: int = 2
    max_depth: int = 6
    max_size: int = 40
    p_input: float = 0.75  # probability that a leaf is an input rather than a constant
    p_leaf: float = 0.3  # in "grow": probability of stopping early at an inner position

    def validate(self) -> None:
        if not 1 <= self.min_depth <= self.max_depth:
            raise ValueError(f"need 1 <= min_depth <= max_depth, got {self.min_depth} and {self.max_depth}")
        if self.max_size < 1:
            raise ValueError(f"max_size must be positive, got {self.max_size}")
        for name in ("p_input", "p_leaf"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _unary(br: Branch, kind: str) -> list[str]:
    return sorted(n for n in br.ops if OPS[n].arity == 1 and (not OPS[n].needs_classes or kind == CLASS))


def _binary(br: Branch) -> list[str]:
    return sorted(n for n in br.ops if OPS[n].arity == 2 and not OPS[n].reduces_classes)


def random_leaf(br: Branch, rng: random.Random, kind: str, limits: TreeLimits) -> Expr:
    if kind == br.input_kind and rng.random() < limits.p_input:
        return Expr(rng.choice(br.inputs))
    return const(rng.choice(SAMPLE_CONSTANTS))


def random_tree(
    br: Branch,
    rng: random.Random,
    depth: int,
    method: str = "grow",
    kind: str | None = None,
    limits: TreeLimits | None = None,
) -> Expr:
    """One tree of at most `depth` levels (exactly `depth` along some path for "full")."""
    limits = limits or TreeLimits()
    if method not in ("grow", "full"):
        raise ValueError(f"method must be 'grow' or 'full', got {method!r}")
    unary = {k: _unary(br, k) for k in (CLASS, ROW)}
    binary = _binary(br)
    reduces = "Dot" in br.ops and br.input_kind == CLASS

    def gen(kind: str, depth_left: int) -> Expr:
        # A row value in a class-input branch can only come from Dot, which needs two more levels.
        needs_dot = kind == ROW and br.input_kind == CLASS
        if depth_left <= 1 or (needs_dot and depth_left <= 1):
            return random_leaf(br, rng, kind, limits)
        if method == "grow" and rng.random() < limits.p_leaf and not (needs_dot and depth_left == 2):
            return random_leaf(br, rng, kind, limits)
        if needs_dot and reduces and (depth_left == 2 or rng.random() < 0.5):
            return Expr("Dot", (gen(CLASS, depth_left - 1), gen(CLASS, depth_left - 1)))
        if rng.random() < 0.5:
            name = rng.choice(unary[kind])
            child = gen(kind, depth_left - 1)
            if OPS[name].needs_classes and not child.inputs:
                child = Expr(rng.choice(br.inputs))  # Softmax of a constant is a constant: not a class value
            return Expr(name, (child,))
        return Expr(rng.choice(binary), (gen(kind, depth_left - 1), gen(kind, depth_left - 1)))

    return gen(kind or br.output_kind, depth)


def ramped_half_and_half(
    br: Branch, rng: random.Random, count: int, limits: TreeLimits | None = None, max_tries: int = 50
) -> list[Expr]:
    """`count` trees, depths ramped over [min_depth, max_depth], alternating grow and full; trees
    larger than `max_size` are redrawn (a bounded number of times, then the depth shrinks)."""
    limits = limits or TreeLimits()
    limits.validate()
    depths = list(range(limits.min_depth, limits.max_depth + 1))
    out: list[Expr] = []
    for i in range(count):
        depth = depths[(i // 2) % len(depths)]
        method = "grow" if i % 2 == 0 else "full"
        for attempt in range(max_tries):
            d = max(limits.min_depth, depth - attempt // 10)
            tree = random_tree(br, rng, d, method, limits=limits)
            if tree.size <= limits.max_size:
                break
        out.append(tree)
    return out
