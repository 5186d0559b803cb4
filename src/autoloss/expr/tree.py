"""The expression tree: an immutable, hashable node that prints itself in the published prefix syntax.

A node is `head` plus `args`. `head` is an operator name from the registry (interior node), an input
name such as `X` (leaf), or a numeric literal kept as written (leaf), so that the published strings
print back character for character.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from autoloss.ops import OPS


class cached_property:
    """functools.cached_property without its per-instance lock (Python 3.11 takes one on every first
    access): trees are immutable and built by the thousand per second in screening, where the lock cost
    more than the computations it guarded."""

    def __init__(self, func: Any):
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.func(obj)  # later reads find it in __dict__ directly
        return value


def _is_number(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value)


@dataclass(frozen=True, eq=True)
class Expr:
    head: str
    args: tuple[Expr, ...] = ()
    # The hash is computed once: trees are dict keys in caches and dedup sets.
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.head, self.args)))

    def __hash__(self) -> int:
        return self._hash

    # --- what kind of node ------------------------------------------------------------------
    @cached_property
    def is_const(self) -> bool:
        return not self.args and _is_number(self.head)

    @property
    def is_input(self) -> bool:
        return not self.args and not self.is_const and self.head not in OPS

    @property
    def is_op(self) -> bool:
        return self.head in OPS

    @property
    def value(self) -> float:
        if not self.is_const:
            raise TypeError(f"{self.head!r} is not a constant")
        return float(self.head)

    # --- measures -----------------------------------------------------------------------------
    @cached_property
    def size(self) -> int:
        """Number of nodes."""
        return 1 + sum(a.size for a in self.args)

    @cached_property
    def depth(self) -> int:
        """Levels from the root to the deepest leaf; a leaf has depth 1."""
        return 1 + max((a.depth for a in self.args), default=0)

    @cached_property
    def inputs(self) -> frozenset[str]:
        """The input names the expression reads."""
        if self.is_input:
            return frozenset((self.head,))
        return frozenset().union(*(a.inputs for a in self.args)) if self.args else frozenset()

    @cached_property
    def ops_used(self) -> frozenset[str]:
        own = frozenset((self.head,)) if self.is_op else frozenset()
        return own.union(*(a.ops_used for a in self.args)) if self.args else own

    @cached_property
    def cost(self) -> float:
        own = OPS[self.head].cost if self.is_op else 0.0
        return own + sum(a.cost for a in self.args)

    # --- traversal ----------------------------------------------------------------------------
    def nodes(self) -> list[tuple[tuple[int, ...], Expr]]:
        """Every (path, subtree), pre-order; a path is the argument indices from the root."""
        out: list[tuple[tuple[int, ...], Expr]] = []
        stack: list[tuple[tuple[int, ...], Expr]] = [((), self)]
        while stack:
            path, node = stack.pop()
            out.append((path, node))
            for i in reversed(range(len(node.args))):
                stack.append(((*path, i), node.args[i]))
        return out

    def at(self, path: tuple[int, ...]) -> Expr:
        node = self
        for i in path:
            node = node.args[i]
        return node

    def replace(self, path: tuple[int, ...], new: Expr) -> Expr:
        """A copy with the subtree at `path` replaced by `new`."""
        if not path:
            return new
        i, rest = path[0], path[1:]
        args = list(self.args)
        args[i] = args[i].replace(rest, new)
        return Expr(self.head, tuple(args))

    # --- printing and serialisation -----------------------------------------------------------
    @cached_property
    def text(self) -> str:
        """The published prefix syntax, e.g. `Neg(Dot(Y,Log(Softmax(X))))`."""
        if not self.args:
            return self.head
        return f"{self.head}({','.join(a.text for a in self.args)})"

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    @cached_property
    def key(self) -> str:
        """Canonical key for syntactic dedup: commutative arguments ordered, numbers normalised.

        `Add(X,Y)` and `Add(Y,X)` share a key; `Neg(Neg(X))` and `X` do not — behavioural
        equivalence is the functional key's job (checks), this one is cheap and exact.
        """
        if self.is_const:
            return repr(float(self.head))
        if not self.args:
            return self.head
        keys = [a.key for a in self.args]
        if OPS[self.head].commutative:
            keys.sort()
        return f"{self.head}({','.join(keys)})"

    def to_json(self) -> Any:
        """Nested lists: `["Add", 1, "X"]`; inputs are strings, constants numbers (as written)."""
        if self.is_const:
            value = float(self.head)
            return (
                int(value)
                if value.is_integer() and "." not in self.head and "e" not in self.head.lower()
                else value
            )
        if not self.args:
            return self.head
        return [self.head, *(a.to_json() for a in self.args)]

    @staticmethod
    def from_json(data: Any) -> Expr:
        from autoloss.errors import ExprError

        if isinstance(data, bool):
            raise ExprError(f"invalid expression JSON: {data!r}")
        if isinstance(data, (int, float)):
            return const(data)
        if isinstance(data, str):
            if _is_number(data):
                return Expr(data)
            if data in OPS:
                raise ExprError(f"operator {data!r} needs arguments in expression JSON")
            return Expr(data)
        if isinstance(data, list) and data and isinstance(data[0], str):
            head = data[0]
            if head not in OPS:
                raise ExprError(
                    f"unknown operator {head!r} in expression JSON; valid: {', '.join(sorted(OPS))}"
                )
            args = tuple(Expr.from_json(a) for a in data[1:])
            if len(args) != OPS[head].arity:
                raise ExprError(
                    f"{head} takes {OPS[head].arity} argument(s), got {len(args)} in expression JSON"
                )
            return Expr(head, args)
        raise ExprError(f"invalid expression JSON: {data!r}")


def var(name: str) -> Expr:
    return Expr(name)


def const(value: float) -> Expr:
    """A constant leaf; integral values print as `2`, not `2.0`, as in the published expressions."""
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"constants must be finite, got {value}")
    return Expr(str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value))


def node(op_name: str, *args: Expr) -> Expr:
    return Expr(op_name, tuple(args))
