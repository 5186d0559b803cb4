"""Immutable expression trees: parse, print, canonical key, JSON, sympy, compile to torch."""

from autoloss.expr.parse import parse
from autoloss.expr.tree import Expr, const, var

__all__ = ["Expr", "const", "parse", "var"]
