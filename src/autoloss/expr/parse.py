"""Parse the published prefix syntax, `Op(arg,arg)`, into an `Expr`.

A hand-written recursive-descent parser over a tokenizer: user text is never given to `eval`. Every
error names the problem and the 1-based column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection

from autoloss.errors import ExprError
from autoloss.expr.tree import Expr
from autoloss.ops import OPS

# One pass over the text: each match is a token or, as the last alternative, the character that cannot
# start one (the error names it). Leading whitespace is consumed by every alternative.
_TOKEN = re.compile(
    r"\s*(?:(?P<num>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<punct>[(),])|(?P<bad>\S))"
)
MAX_LENGTH = 100_000  # a guard against pathological input, far above any real loss
# Nesting and size limits: far above anything the search builds (depth <= 8, a few dozen nodes) or a person
# writes, and low enough that every recursive pass over a tree (printing, shape rules, code generation)
# stays well inside Python's recursion limit. Both can be changed per call (a depth much above ~220
# meets that limit in the recursive passes).
MAX_DEPTH = 150
MAX_NODES = 20_000
NOT_FINITE = {"nan", "inf", "infinity"}  # names float() would read as numbers that are not finite
_SIGNED_NAME = re.compile(r"[+-]([A-Za-z]+)")


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup
        if kind is None:  # trailing whitespace
            break
        if kind == "bad":
            signed = _SIGNED_NAME.match(text, m.start(kind))
            if signed is not None and signed.group(1).lower() in NOT_FINITE:
                raise ExprError(
                    f"{signed.group(0)!r} is not a finite number; constants must be finite",
                    m.start(kind) + 1,
                    text,
                )
            raise ExprError(f"unexpected character {m.group(kind)!r}", m.start(kind) + 1, text)
        value = m.group(kind)
        if kind == "num" and not math.isfinite(float(value)):
            raise ExprError(
                f"number {value} is out of range: it overflows a 64-bit float (largest about 1.8e308)",
                m.start(kind) + 1,
                text,
            )
        tokens.append((kind, value, m.start(kind) + 1))
    return tokens


def parse(
    text: str,
    inputs: Collection[str] | None = None,
    allowed_ops: Collection[str] | None = None,
    context: str = "",
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Expr:
    """Parse `text`. With `inputs`/`allowed_ops`, names outside them are errors (with their column).

    `context` (e.g. "branch reg") only words the error messages. An expression nested deeper than
    `max_depth` levels or with more than `max_nodes` nodes is an error naming the column where it crossed.
    """
    if not isinstance(text, str):
        raise ExprError(f"expression must be text, got {type(text).__name__}")
    if not text.strip():
        raise ExprError("empty expression")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}")
    tokens = _tokenize(text)
    end = len(tokens)
    tokens.append(("end", "", len(text) + 1))  # a sentinel: reading one past the last token is safe
    where = f" for {context}" if context else ""
    pos = 0
    nodes = 0

    def expect(value: str, after: str) -> None:
        nonlocal pos
        tok = tokens[pos]
        if tok[0] == "end":
            raise ExprError(
                f"unbalanced parentheses: expected {value!r} after {after} but the text ended",
                len(text) + 1,
                text,
            )
        if tok[1] != value:
            raise ExprError(f"expected {value!r} after {after}, found {tok[1]!r}", tok[2], text)
        pos += 1

    def parse_node(depth: int) -> Expr:
        nonlocal pos, nodes
        kind, value, col = tokens[pos]
        if kind == "end":
            raise ExprError("unexpected end of expression", col, text)
        pos += 1
        nodes += 1
        if depth > max_depth:
            raise ExprError(f"expression is nested deeper than {max_depth} levels", col, text)
        if nodes > max_nodes:
            raise ExprError(f"expression has more than {max_nodes} nodes", col, text)
        if kind == "num":
            return Expr(value)
        if kind == "punct":
            raise ExprError(f"unexpected {value!r}", col, text)
        if tokens[pos][1] == "(":
            if value not in OPS:
                raise ExprError(
                    f"unknown operator {value!r}; valid operators: {', '.join(sorted(OPS))}", col, text
                )
            if allowed_ops is not None and value not in allowed_ops:
                raise ExprError(
                    f"operator {value!r} is not allowed{where}; allowed: {', '.join(sorted(allowed_ops))}",
                    col,
                    text,
                )
            pos += 1
            args = [parse_node(depth + 1)]
            while tokens[pos][1] == ",":
                pos += 1
                args.append(parse_node(depth + 1))
            expect(")", f"the arguments of {value}")
            arity = OPS[value].arity
            if len(args) != arity:
                raise ExprError(
                    f"{value} takes {arity} argument{'s' if arity != 1 else ''}, got {len(args)}", col, text
                )
            return Expr(value, tuple(args))
        if value in OPS:
            raise ExprError(f"operator {value!r} needs arguments, e.g. {value}(X)", col, text)
        if value.lower() in NOT_FINITE:
            raise ExprError(f"{value!r} is not a finite number; constants must be finite", col, text)
        if inputs is not None and value not in inputs:
            raise ExprError(f"unknown input {value!r}{where}; inputs are {', '.join(inputs)}", col, text)
        return Expr(value)

    tree = parse_node(1)
    if pos != end:
        _, value, col = tokens[pos]
        if value == ")":
            raise ExprError("unbalanced parentheses: unexpected ')'", col, text)
        raise ExprError(f"unexpected {value!r} after a complete expression", col, text)
    return tree
