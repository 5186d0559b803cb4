"""The operator helpers generated code needs, as standalone source read from the registry.

Generated loss code calls what `autoloss.ops.CODEGEN_NAMES` binds (`_serf`, `_dot`, `_DIV_EPS`, ...). For an
exported file these are written out from the registry itself: each helper's own source (`inspect`), plus
every module-level function, module and constant of `autoloss.ops` that it reads, transitively. So an
exported loss computes with exactly the definitions (guards, clamps, class axis) autoloss compiles with,
and a new operator needs no export code.
"""

from __future__ import annotations

import inspect
import textwrap
import types
from collections.abc import Iterable

from autoloss import ops as ops_module
from autoloss.errors import AutolossError
from autoloss.expr.tree import Expr
from autoloss.ops import CODEGEN_NAMES, OPS


def names_used(exprs: Iterable[Expr]) -> list[str]:
    """The CODEGEN_NAMES the generated code of `exprs` refers to, in registry order."""
    sources = [OPS[name].source for expr in exprs for name in expr.ops_used]
    return [name for name in CODEGEN_NAMES if any(name in s for s in sources)]


def _globals_read(fn: types.FunctionType) -> list[str]:
    """Module-level names of autoloss.ops that `fn` (and functions nested in it) reads."""
    names: list[str] = []
    stack = [fn.__code__]
    while stack:
        code = stack.pop()
        names += [n for n in code.co_names if n in vars(ops_module) and n not in names]
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return names


def helper_source(names: Iterable[str]) -> tuple[list[str], str]:
    """(import lines, standalone source) defining `names` (CODEGEN_NAMES keys) and everything they read from
    autoloss.ops."""
    imports: dict[str, str] = {}
    constants: dict[str, object] = {}
    functions: dict[str, str] = {}
    bindings: list[str] = []

    def need(name: str, value: object) -> None:
        if name in imports or name in constants or name in functions:
            return
        if isinstance(value, types.ModuleType):
            imports[name] = (
                f"import {value.__name__}" if name == value.__name__ else f"import {value.__name__} as {name}"
            )
        elif isinstance(value, (int, float, str)):
            constants[name] = value
        elif isinstance(value, types.FunctionType) and value.__module__ == ops_module.__name__:
            functions[name] = ""  # reserve first: helpers may read each other
            functions[name] = textwrap.dedent(inspect.getsource(value))
            for dep in _globals_read(value):
                need(dep, vars(ops_module)[dep])
        else:
            raise AutolossError(f"cannot export operator helper {name!r} of type {type(value).__name__}")

    for name in names:
        value = CODEGEN_NAMES[name]
        if isinstance(value, types.FunctionType) and value.__name__ != name:
            need(value.__name__, value)
            bindings.append(f"{name} = {value.__name__}")
        else:
            need(name, value)
    blocks = [
        "\n".join(f"{n} = {v!r}" for n, v in constants.items()),
        *(src.rstrip() for src in functions.values()),
        "\n".join(bindings),
    ]
    return sorted(imports.values()), "\n\n\n".join(b for b in blocks if b) + "\n"
