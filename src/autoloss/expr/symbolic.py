"""sympy is the hub for canonical forms, LaTeX and export.

Softmax and Dot work over the class axis and have no scalar form; they stay opaque functions
`softmax(.)` and `dot(., .)`, which `lambdify` maps to numpy implementations.
"""

from __future__ import annotations

from typing import Any

from autoloss.expr.tree import Expr
from autoloss.ops import OPS

# LaTeX names for the inputs (sympy would print PY as P_{Y}); the symbols keep plain names.
LATEX_NAMES = {"X": "X", "Y": "Y", "Z": "Z", "Q": "Q", "PY": "P_Y", "NY": "N_Y", "I": "I", "U": "U", "E": "E"}


def symbols_for(names) -> dict[str, Any]:
    import sympy

    return {n: sympy.Symbol(n) for n in names}


def to_sympy(expr: Expr, guarded: bool = False) -> Any:
    """The sympy form. `guarded` keeps the numerical guards (1e-20, the exp clamp) so that it computes
    exactly what the compiled torch code does; the default drops them for reading."""
    import sympy

    cache: dict[Expr, Any] = {}

    def walk(node: Expr) -> Any:
        if node in cache:
            return cache[node]
        if node.is_const:
            value = node.value
            out = sympy.Integer(int(value)) if value.is_integer() else sympy.Float(value)
        elif node.is_input:
            out = sympy.Symbol(node.head)
        else:
            op = OPS[node.head]
            fn = op.sympy_guarded if guarded and op.sympy_guarded is not None else op.sympy_fn
            out = fn(*(walk(a) for a in node.args))
        cache[node] = out
        return out

    return walk(expr)


def to_latex(expr: Expr) -> str:
    import sympy

    sym = to_sympy(expr)
    names = {s: LATEX_NAMES.get(s.name, s.name) for s in sym.free_symbols}
    return sympy.latex(sym, symbol_names=names)


def simplify(expr: Expr, timeout_size: int = 60) -> Any:
    """A simplified sympy form. Large trees get the cheaper `cancel`/`expand` treatment, since full
    `simplify` can take minutes on them."""
    import sympy

    sym = to_sympy(expr)
    if expr.size > timeout_size:
        return sympy.cancel(sym)
    return sympy.simplify(sym)


def _np_softmax(x):
    import numpy as np

    x = np.asarray(x, dtype=float)
    axis = 1 if x.ndim > 1 else 0
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _np_dot(a, b):
    import numpy as np

    prod = np.asarray(a) * np.asarray(b)
    return prod.sum(axis=1 if prod.ndim > 1 else 0)


def _np_erf(x):
    import math

    import numpy as np

    return np.vectorize(math.erf, otypes=[float])(x)


def lambdify(expr: Expr, inputs) -> Any:
    """A numpy function of the inputs from the guarded sympy form — an independent path to check the
    compiled code, which must agree with it wherever both are finite."""
    import sympy

    syms = [sympy.Symbol(n) for n in inputs]
    return sympy.lambdify(
        syms,
        to_sympy(expr, guarded=True),
        modules=[{"softmax": _np_softmax, "dot": _np_dot, "erf": _np_erf}, "numpy"],
        dummify=True,
    )
