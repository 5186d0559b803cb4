"""The operator registry: one record per primitive.

Sampling, parsing, printing, compiling, simplifying and exporting all read `OPS`; adding an operator
is one `_register(...)` call. The torch definitions are the CSE-Autoloss reference semantics
(the guards of the paper's released formulas): the published losses depend on the exact guards below.

The numerical guards live here, in the primitive, and nowhere else.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Guards from the reference implementation. Changing them changes the published losses.
DIV_EPS = 1e-20
LOG_EPS = 1e-20
EXP_CLAMP = 88.0  # exp(88) ~ 1.65e38 is just below float32's max, so Exp never overflows to inf

# `source` is a Python expression template for the code generator: {0}, {1} are argument names,
# `torch` is in scope and `_eps`, `_clamp`, ... are module constants bound by the compiler.


@dataclass(frozen=True)
class Op:
    """One primitive: how to evaluate it in torch and sympy, and how the search should treat it."""

    name: str
    arity: int
    torch_fn: Callable[..., Any]
    sympy_fn: Callable[..., Any]
    source: str  # template for generated torch code; see module docstring
    cost: float  # relative evaluation cost, used by the search to break ties toward cheap losses
    doc: str
    commutative: bool = False
    # The sympy form with the numerical guards kept, for checking compiled code against sympy; None means
    # the op has no guard and `sympy_fn` is already exact.
    sympy_guarded: Callable[..., Any] | None = None
    reduces_classes: bool = False  # Dot: turns [N, C] into [N]
    needs_classes: bool = False  # Softmax: meaningless on a per-element value


OPS: dict[str, Op] = {}


def _register(op: Op) -> None:
    if op.name in OPS:
        raise ValueError(f"operator {op.name!r} is registered twice")
    OPS[op.name] = op


def op(name: str) -> Op:
    """The registered operator called `name` (case-sensitive, as in the published expressions)."""
    try:
        return OPS[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r}; valid operators: {', '.join(sorted(OPS))}") from None


# --- torch implementations ---------------------------------------------------------------------
# Imported lazily: `import autoloss` must stay light, and sympy-only users need no torch.


def _torch():
    import torch

    return torch


def _t_div(a, b):
    # No sign handling, exactly as the reference: a negative denominator near -1e-20 can still blow up,
    # which is a rejection for the filters, not something to hide here.
    return a / (b + DIV_EPS)


def _t_log(x):
    # NaN for negative x is deliberate: the filters reject such candidates instead of us clipping them.
    return _torch().log(x + LOG_EPS)


def _t_exp(x):
    return _torch().exp(_torch().clamp(x, max=EXP_CLAMP))


def _t_serf(x):
    torch = _torch()
    return (torch.erf(math.sqrt(math.pi) * x / 4.0) + 1.0) / 2.0


def _t_salf(x):
    h = x / 2.0
    return (h / _torch().sqrt(1.0 + h * h) + 1.0) / 2.0


def _t_sgdf(x):
    # gd(z) = 2 atan(tanh(z / 2)) is the Gudermannian function; scaled so value 0.5 and slope 1/4 at 0.
    torch = _torch()
    z = math.pi * x / 4.0
    return ((2.0 / math.pi) * 2.0 * torch.atan(torch.tanh(z / 2.0)) + 1.0) / 2.0


def _t_softmax(x):
    # Over the class axis (dim 1); a 1-D input is a single distribution.
    return _torch().softmax(x, dim=1 if x.dim() > 1 else 0)


def _t_dot(a, b):
    return (a * b).sum(dim=1 if (a * b).dim() > 1 else 0)


# --- sympy implementations ---------------------------------------------------------------------
# Symbolic forms for printing, LaTeX and simplification. The epsilons are dropped: they are numerical
# guards, not part of the mathematics a reader wants to see.


def _sp():
    import sympy

    return sympy


def _s_serf(x):
    sp = _sp()
    return (sp.erf(sp.sqrt(sp.pi) * x / 4) + 1) / 2


def _s_salf(x):
    sp = _sp()
    h = x / 2
    return (h / sp.sqrt(1 + h**2) + 1) / 2


def _s_sgdf(x):
    sp = _sp()
    z = sp.pi * x / 4
    return (2 / sp.pi * 2 * sp.atan(sp.tanh(z / 2)) + 1) / 2


def _s_softmax(x):
    # A class-axis reduction has no scalar sympy form; keep it as an opaque function of x.
    return _sp().Function("softmax")(x)


def _s_dot(a, b):
    return _sp().Function("dot")(a, b)


def _s_relu(x):
    return _sp().Max(0, x)


def _s_exp(x):
    return _sp().exp(x)


_register(Op("Add", 2, lambda a, b: a + b, lambda a, b: a + b, "({0} + {1})", 1.0, "a + b", commutative=True))
_register(Op("Sub", 2, lambda a, b: a - b, lambda a, b: a - b, "({0} - {1})", 1.0, "a - b"))
_register(Op("Mul", 2, lambda a, b: a * b, lambda a, b: a * b, "({0} * {1})", 1.0, "a * b", commutative=True))
_register(
    Op(
        "Div",
        2,
        _t_div,
        lambda a, b: a / b,
        "({0} / ({1} + _DIV_EPS))",
        1.5,
        "a / (b + 1e-20)",
        sympy_guarded=lambda a, b: a / (b + _sp().Float(DIV_EPS)),
    )
)
_register(Op("Neg", 1, lambda x: -x, lambda x: -x, "(-{0})", 0.5, "-x"))
_register(Op("Abs", 1, lambda x: x.abs(), lambda x: _sp().Abs(x), "torch.abs({0})", 1.0, "|x|"))
_register(
    Op(
        "Log",
        1,
        _t_log,
        lambda x: _sp().log(x),
        "torch.log({0} + _LOG_EPS)",
        2.0,
        "log(x + 1e-20); NaN for x < 0",
        sympy_guarded=lambda x: _sp().log(x + _sp().Float(LOG_EPS)),
    )
)
_register(
    Op(
        "Exp",
        1,
        _t_exp,
        _s_exp,
        "torch.exp(torch.clamp({0}, max=_EXP_CLAMP))",
        2.0,
        "exp(min(x, 88))",
        sympy_guarded=lambda x: _sp().exp(_sp().Min(x, EXP_CLAMP)),
    )
)
_register(
    Op(
        "Sqrt",
        1,
        lambda x: _torch().sqrt(x),
        lambda x: _sp().sqrt(x),
        "torch.sqrt({0})",
        2.0,
        "sqrt(x); NaN for x < 0",
    )
)
_register(
    Op(
        "Sig",
        1,
        lambda x: _torch().sigmoid(x),
        lambda x: 1 / (1 + _sp().exp(-x)),
        "torch.sigmoid({0})",
        2.0,
        "1 / (1 + e^-x)",
    )
)
_register(
    Op("Tanh", 1, lambda x: _torch().tanh(x), lambda x: _sp().tanh(x), "torch.tanh({0})", 2.0, "tanh(x)")
)
_register(Op("Relu", 1, lambda x: _torch().relu(x), _s_relu, "torch.relu({0})", 1.0, "max(x, 0)"))
_register(Op("Sin", 1, lambda x: _torch().sin(x), lambda x: _sp().sin(x), "torch.sin({0})", 2.0, "sin(x)"))
_register(Op("Cos", 1, lambda x: _torch().cos(x), lambda x: _sp().cos(x), "torch.cos({0})", 2.0, "cos(x)"))
_register(
    Op(
        "Softplus",
        1,
        lambda x: _torch().nn.functional.softplus(x),
        lambda x: _sp().log(1 + _sp().exp(x)),
        "torch.nn.functional.softplus({0})",
        2.0,
        "log(1 + e^x)",
    )
)
_register(
    Op(
        "Softmax",
        1,
        _t_softmax,
        _s_softmax,
        "torch.softmax({0}, dim=1 if {0}.dim() > 1 else 0)",
        3.0,
        "softmax over the class axis (dim 1)",
        needs_classes=True,
    )
)
_register(Op("Serf", 1, _t_serf, _s_serf, "_serf({0})", 2.5, "(erf(sqrt(pi) x / 4) + 1) / 2"))
_register(Op("Salf", 1, _t_salf, _s_salf, "_salf({0})", 2.5, "((x/2) / sqrt(1 + (x/2)^2) + 1) / 2"))
_register(Op("Sgdf", 1, _t_sgdf, _s_sgdf, "_sgdf({0})", 2.5, "((2/pi) gd(pi x / 4) + 1) / 2"))
_register(
    Op(
        "Dot",
        2,
        _t_dot,
        _s_dot,
        "_dot({0}, {1})",
        2.0,
        "sum of a * b over the class axis (dim 1; dim 0 for 1-D)",
        commutative=True,
        reduces_classes=True,
    )
)

# Names the generated code may use besides `torch`; the compiler binds exactly these.
CODEGEN_NAMES: dict[str, Any] = {
    "_DIV_EPS": DIV_EPS,
    "_LOG_EPS": LOG_EPS,
    "_EXP_CLAMP": EXP_CLAMP,
    "_serf": _t_serf,
    "_salf": _t_salf,
    "_sgdf": _t_sgdf,
    "_dot": _t_dot,
}

# Constants the search draws; the parser accepts any numeric literal.
SAMPLE_CONSTANTS: tuple[float, ...] = (1.0, 2.0, 3.0)
