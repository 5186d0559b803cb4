"""Compile an expression into one generated torch function.

The tree is validated first (registry operators, known inputs, finite numeric constants), then
emitted as straight-line code, one assignment per distinct subtree: identical subtrees are computed
once (the published B losses repeat `Sig(X)` several times). Only identifiers we generate reach the
compiler, so user text never does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from autoloss.errors import ExprError
from autoloss.expr.tree import Expr
from autoloss.ops import CODEGEN_NAMES, OPS

_counter = itertools.count()


def generate_source(expr: Expr, inputs: Sequence[str], name: str = "loss") -> str:
    """The Python source of `def name(<inputs>)` computing `expr`."""
    for ident in (*inputs, name):
        if not ident.isidentifier():
            raise ExprError(f"invalid input name {ident!r}")
    lines: list[str] = []
    names: dict[Expr, str] = {}
    # Constant-only subtrees must still produce tensors (torch.log(2.0) fails on a float), so a constant
    # that no input-dependent operand accompanies is made a 0-d tensor on the inputs' dtype and device.
    ref = inputs[0]

    def emit(node: Expr) -> str:
        if node in names:
            return names[node]
        if node.is_const:
            value = node.value
            if not math.isfinite(value):
                raise ExprError(f"constant {node.head} is not finite")
            return repr(value)
        if node.is_input:
            if node.head not in inputs:
                raise ExprError(f"unknown input {node.head!r}; inputs are {', '.join(inputs)}")
            return node.head
        op = OPS.get(node.head)
        if op is None or len(node.args) != op.arity:
            raise ExprError(f"invalid node {node.text}")
        args = [emit(a) for a in node.args]
        if not node.inputs:
            args = [f"{ref}.new_tensor({a})" if a[0].isdigit() or a[0] == "-" else a for a in args]
        var = f"_v{len(names)}"
        lines.append(f"    {var} = {op.source.format(*args)}")
        names[node] = var
        return var

    result = emit(expr)
    if expr.is_const:
        result = f"{ref}.new_tensor({result})"
    body = "\n".join(lines)
    return (
        f"def {name}({', '.join(inputs)}):\n{body}\n    return {result}\n"
        if body
        else (f"def {name}({', '.join(inputs)}):\n    return {result}\n")
    )


def compile_expr(expr: Expr, inputs: Sequence[str]) -> Callable[..., Any]:
    """A torch function of the named inputs (positional or keyword) computing `expr`, autograd-ready."""
    import torch

    source = generate_source(expr, inputs)
    namespace: dict[str, Any] = {"torch": torch, **CODEGEN_NAMES}
    filename = f"<autoloss-{next(_counter)}>"
    exec(compile(source, filename, "exec"), namespace)
    fn = namespace["loss"]
    fn.__doc__ = f"Compiled from {expr.text}\n\n{source}"
    return fn
