"""Compile an expression into one generated torch function.

The tree is validated first (registry operators, known inputs, finite numeric constants), then
emitted as straight-line code, one assignment per distinct subtree: identical subtrees are computed
once (the published B losses repeat `Sig(X)` several times). Before emitting, `autoloss.expr.rewrite`
turns the tree into an equivalent one that runs fewer kernels (`Mul(a,a)` as one square, signs folded
into Add/Sub, `Softplus(Neg(x))` as a log-sigmoid); `optimize=False` emits the tree as written. Only
identifiers we generate reach the compiler, so user text never does.

`evaluator` runs the same plan without compiling: each step calls a small function built once per
operator from the same template, so it computes exactly what the generated function computes. Compiling
costs about as much as a few dozen calls of a small loss; the filters call each candidate once or twice,
so they evaluate, and the simulation and the detectors, which call it thousands of times, compile.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

from autoloss.errors import ExprError
from autoloss.expr.rewrite import FUSED, Rule, rewrite
from autoloss.expr.tree import Expr
from autoloss.ops import CODEGEN_NAMES, OPS

_counter = itertools.count()


def generate_source(
    expr: Expr,
    inputs: Sequence[str],
    name: str = "loss",
    optimize: bool = True,
    rules: dict[str, Rule] | None = None,
) -> str:
    """The Python source of `def name(<inputs>)` computing `expr`, rewritten first by `rules` (default
    `autoloss.expr.rewrite.RULES`) unless not `optimize`."""
    for ident in (*inputs, name):
        if not ident.isidentifier():
            raise ExprError(f"invalid input name {ident!r}")
    _validate(expr, inputs)
    if optimize:
        expr = rewrite(expr, rules)
    # Constant-only subtrees must still produce tensors (torch.log(2.0) fails on a float), so a constant
    # that no input-dependent operand accompanies is made a 0-d tensor on the inputs' dtype and device.
    ref = inputs[0]
    names: dict[Expr, str] = {}

    def operand(arg: Expr, parent: Expr) -> str:
        if arg.is_const:
            return repr(arg.value) if parent.inputs else f"{ref}.new_tensor({arg.value!r})"
        return arg.head if arg.is_input else names[arg]

    lines: list[str] = []
    for k, node in enumerate(operator_order(expr)):
        op = OPS.get(node.head) or FUSED[node.head]
        names[node] = f"_v{k}"
        lines.append(f"    _v{k} = {op.source.format(*(operand(a, node) for a in node.args))}")
    if expr.is_const:
        result = f"{ref}.new_tensor({expr.value!r})"
    else:
        result = expr.head if expr.is_input else names[expr]
    body = "\n".join(lines)
    return (
        f"def {name}({', '.join(inputs)}):\n{body}\n    return {result}\n"
        if body
        else (f"def {name}({', '.join(inputs)}):\n    return {result}\n")
    )


def operator_order(expr: Expr) -> list[Expr]:
    """The distinct operator nodes of `expr`, operands first: the steps the generated code and
    `evaluator` compute, one per distinct subtree, in the same order."""
    order: list[Expr] = []
    seen: set[Expr] = set()

    def visit(node: Expr) -> None:
        if node in seen or not node.args:
            return
        for a in node.args:
            visit(a)
        seen.add(node)
        order.append(node)

    visit(expr)
    return order


def evaluator(expr: Expr, inputs: Sequence[str], optimize: bool = False) -> Callable[..., Any]:
    """A function of the inputs (positional, in `inputs` order) computing `expr` exactly as the
    generated code does, step by step with no compilation; `optimize=True` evaluates the rewritten tree
    (what `compile_expr` runs)."""
    _validate(expr, inputs)
    if optimize:
        expr = rewrite(expr)
    if expr.is_const:
        value = expr.value
        return lambda *args: args[0].new_tensor(value)
    order = operator_order(expr)
    # Slots: the inputs, the constants used as plain floats, the constants a constant-only node needs as
    # 0-d tensors (the generated code's `ref.new_tensor(c)`), then each step's output.
    plain = list(dict.fromkeys(repr(a.value) for n in order if n.inputs for a in n.args if a.is_const))
    tensor = list(dict.fromkeys(repr(a.value) for n in order if not n.inputs for a in n.args if a.is_const))
    slot: dict[Expr, int] = {Expr(name): i for i, name in enumerate(inputs)}
    plain_slot = {v: len(inputs) + i for i, v in enumerate(plain)}
    tensor_slot = {v: len(inputs) + len(plain) + i for i, v in enumerate(tensor)}
    first_step = len(inputs) + len(plain) + len(tensor)
    slot.update((n, first_step + k) for k, n in enumerate(order))

    def where(arg: Expr, parent: Expr) -> int:
        if arg.is_const:
            return (plain_slot if parent.inputs else tensor_slot)[repr(arg.value)]
        return slot[arg]

    calls = tuple((_step_fn(n.head), tuple(where(a, n) for a in n.args)) for n in order)
    plain_values = tuple(float(v) for v in plain)
    tensor_values = tuple(float(v) for v in tensor)
    result = slot[expr] if expr.args else slot[Expr(expr.head)]

    def evaluate(*args: Any) -> Any:
        values = [*args, *plain_values, *(args[0].new_tensor(v) for v in tensor_values)]
        for fn, idx in calls:
            values.append(fn(*[values[i] for i in idx]))
        return values[result]

    return evaluate


_STEP_FNS: dict[str, Callable[..., Any]] = {}


def _step_fn(head: str) -> Callable[..., Any]:
    """The operator's template as a function: the very expression the generated code inlines (templates
    are ours, from the registry; no user text is involved)."""
    fn = _STEP_FNS.get(head)
    if fn is None:
        import torch

        op = OPS.get(head) or FUSED[head]
        params = [f"a{i}" for i in range(op.arity)]
        source = f"lambda {', '.join(params)}: {op.source.format(*params)}"
        fn = eval(compile(source, f"<autoloss-op-{head}>", "eval"), {"torch": torch, **CODEGEN_NAMES})
        _STEP_FNS[head] = fn
    return fn


def _validate(expr: Expr, inputs: Sequence[str]) -> None:
    """ExprError unless every node is a registry operator of the right arity, a known input or a finite
    constant (checked on the tree as written, before any rewrite)."""
    seen: set[Expr] = set()
    stack = [expr]
    while stack:  # each distinct node once (a shared subtree is checked once)
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        stack.extend(reversed(node.args))  # pre-order: the first bad node in reading order is reported
        if node.is_const:
            if not math.isfinite(node.value):
                raise ExprError(f"constant {node.head} is not finite")
        elif node.is_input:
            if node.head not in inputs:
                raise ExprError(f"unknown input {node.head!r}; inputs are {', '.join(inputs)}")
        else:
            op = OPS.get(node.head)
            if op is None or len(node.args) != op.arity:
                raise ExprError(f"invalid node {node.text}")


def compile_expr(
    expr: Expr, inputs: Sequence[str], optimize: bool = True, rules: dict[str, Rule] | None = None
) -> Callable[..., Any]:
    """A torch function of the named inputs (positional or keyword) computing `expr`, autograd-ready;
    `optimize=False` skips the algebraic rewrites, `rules` replaces them (both for checking them)."""
    import torch

    source = generate_source(expr, inputs, optimize=optimize, rules=rules)
    namespace: dict[str, Any] = {"torch": torch, **CODEGEN_NAMES}
    filename = f"<autoloss-{next(_counter)}>"
    exec(compile(source, filename, "exec"), namespace)
    fn = namespace["loss"]
    fn.__doc__ = f"Compiled from {expr.text}\n\n{source}"
    return fn
