"""Readable infix printing, e.g. `-dot(y * (1 + sin(z)), log(softmax(x)))`."""

from __future__ import annotations

from autoloss.expr.tree import Expr

# Operators printed as symbols, with their precedence (higher binds tighter).
_BINARY = {"Add": ("+", 1), "Sub": ("-", 1), "Mul": ("*", 2), "Div": ("/", 2)}
_NEG_PREC = 3
_ATOM = 4


def _infix(node: Expr) -> tuple[str, int]:
    if not node.args:
        return node.head, _ATOM
    if node.head == "Add" and node.args[1].head == "Neg" and node.args[1].args:
        # a + -b reads better as a - b (the published losses are full of this pattern).
        return _infix(Expr("Sub", (node.args[0], node.args[1].args[0])))
    if node.head in _BINARY:
        symbol, prec = _BINARY[node.head]
        left, lp = _infix(node.args[0])
        right, rp = _infix(node.args[1])
        if lp < prec:
            left = f"({left})"
        # Right operand of - and / needs brackets at equal precedence: a - (b - c).
        if rp < prec or (rp == prec and node.head in ("Sub", "Div")):
            right = f"({right})"
        return f"{left} {symbol} {right}", prec
    if node.head == "Neg":
        inner, p = _infix(node.args[0])
        return f"-({inner})" if p < _ATOM else f"-{inner}", _NEG_PREC
    if node.head == "Abs":
        return f"|{_infix(node.args[0])[0]}|", _ATOM
    args = ", ".join(_infix(a)[0] for a in node.args)
    return f"{node.head.lower()}({args})", _ATOM


def to_infix(expr: Expr) -> str:
    return _infix(expr)[0]
