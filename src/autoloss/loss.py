"""`Loss`: a loss expression bound to its branch, callable on tensors.

    >>> from autoloss import Loss
    >>> loss = Loss.named("cse-a-cls")
    >>> loss.infix()
    '-dot(y * (1 + sin(z)), log(softmax(x)))'

Calling a loss returns the unreduced value: [N] for cls-softmax and reg, [N, K] for cls-sigmoid.
The detector seam does the weighting and normalisation.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from autoloss.errors import ExprError
from autoloss.expr.parse import parse
from autoloss.expr.tree import Expr
from autoloss.spaces.branches import CLASS, Branch, branch, check_shapes, infer_branch
from autoloss.spaces.named import NAMED

JSON_VERSION = 1


class Loss:
    """An immutable, hashable loss: expression + branch (+ the name it was looked up by)."""

    __slots__ = ("__dict__", "branch", "expr", "name")

    def __init__(self, expr: Expr, branch_name: str, name: str | None = None):
        br = branch(branch_name)
        check_shapes(expr, br)
        self.expr = expr
        self.branch = br.name
        self.name = name

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, branch: str | None = None) -> Loss:
        """Parse prefix text. Without `branch`, it is inferred from the inputs the text reads."""
        if branch is None:
            expr = parse(text)
            return cls(expr, infer_branch(expr).name)
        br = _branch(branch)
        return cls(parse(text, inputs=br.inputs, allowed_ops=br.ops, context=f"branch {br.name}"), br.name)

    @classmethod
    def named(cls, name: str) -> Loss:
        key = name.lower()
        if key not in NAMED:
            raise ExprError(f"unknown named loss {name!r}; named losses: {', '.join(NAMED)}")
        entry = NAMED[key]
        return cls(parse(entry.text), entry.branch, name=entry.name)

    @classmethod
    def resolve(cls, text_or_name: str, branch: str | None = None) -> Loss:
        """A named loss if `text_or_name` names one, else parsed text; checks the branch matches."""
        if text_or_name.lower() in NAMED:
            loss = cls.named(text_or_name)
            if branch is not None and loss.branch != _branch(branch).name:
                raise ExprError(f"{loss.name} is a {loss.branch} loss, not {_branch(branch).name}")
            return loss
        return cls.parse(text_or_name, branch)

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> Loss:
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise ExprError(f"loss JSON is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or "branch" not in data or "expr" not in data:
            raise ExprError("loss JSON needs the fields 'branch' and 'expr'")
        version = data.get("version", JSON_VERSION)
        if version != JSON_VERSION:
            raise ExprError(
                f"loss JSON version {version} is not supported (this autoloss writes {JSON_VERSION})"
            )
        return cls(Expr.from_json(data["expr"]), data["branch"], data.get("name"))

    # --- views ----------------------------------------------------------------------------------
    @property
    def text(self) -> str:
        return self.expr.text

    @property
    def inputs(self) -> tuple[str, ...]:
        return branch(self.branch).inputs

    @property
    def size(self) -> int:
        return self.expr.size

    @property
    def depth(self) -> int:
        return self.expr.depth

    @property
    def key(self) -> str:
        return f"{self.branch}:{self.expr.key}"

    def infix(self) -> str:
        from autoloss.expr.infix import to_infix

        return to_infix(self.expr)

    def latex(self) -> str:
        from autoloss.expr.symbolic import to_latex

        return to_latex(self.expr)

    def sympy(self) -> Any:
        from autoloss.expr.symbolic import to_sympy

        return to_sympy(self.expr)

    def simplify(self) -> Any:
        from autoloss.expr.symbolic import simplify

        return simplify(self.expr)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": JSON_VERSION, "branch": self.branch, "expr": self.expr.to_json()}
        if self.name:
            out["name"] = self.name
        out["text"] = self.text
        return out

    # --- evaluation -----------------------------------------------------------------------------
    @cached_property
    def fn(self):
        """The compiled torch function, positional in the branch's input order."""
        from autoloss.expr.codegen import compile_expr

        return compile_expr(self.expr, self.inputs)

    @cached_property
    def probe_fn(self):
        """The same function evaluated step by step, without compiling or rewriting: for callers that
        evaluate a loss once or twice (the filters), where compiling would cost more than the calls.
        It computes exactly what `compile_expr(expr, inputs, optimize=False)` does; the compiled `fn`
        runs the rewritten tree, equal within float32 rounding (`autoloss.expr.rewrite`)."""
        from autoloss.expr.codegen import evaluator

        return evaluator(self.expr, self.inputs)

    def __call__(self, **inputs: Any) -> Any:
        br = branch(self.branch)
        missing = [n for n in br.inputs if n not in inputs and n in self.expr.inputs]
        unknown = [n for n in inputs if n not in br.inputs]
        if missing or unknown:
            raise TypeError(
                f"{self.branch} loss {self.text} takes inputs {', '.join(br.inputs)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        args = _prepare(br, inputs)
        out = self.fn(*args)
        expected = _output_shape(br, args)
        if tuple(out.shape) != expected:
            # A subtree without inputs (or reading only broadcast ones) can come out smaller.
            out = out.expand(expected)
        return out

    # --- identity -------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, Loss) and (self.branch, self.expr) == (other.branch, other.expr)

    def __hash__(self) -> int:
        return hash((self.branch, self.expr))

    def __repr__(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return f"Loss({label}{self.text!r}, branch={self.branch!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Compiled functions do not pickle; workers recompile from the tree.
        return {"expr": self.expr, "branch": self.branch, "name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.expr, self.branch, self.name = state["expr"], state["branch"], state["name"]


def _branch(name: str) -> Branch:
    return branch(name)


def _prepare(br: Branch, inputs: dict[str, Any]) -> list[Any]:
    """Positional arguments in branch order; class-axis inputs broadcast to the logits' shape."""
    if br.input_kind != CLASS:
        ref = next(v for v in inputs.values())
        return [inputs.get(n, ref.new_zeros(())) for n in br.inputs]
    x = inputs.get("X")
    if x is None:
        x = next(v for v in inputs.values() if v.dim() == 2)
    args = []
    for n in br.inputs:
        v = inputs.get(n)
        if v is None:
            v = x.new_zeros(())
        elif v.dim() == 1:
            v = v.unsqueeze(1)  # a per-RoI value (such as Z) broadcast over the class axis
        args.append(v.expand_as(x) if v.shape != x.shape else v)
    return args


def _output_shape(br: Branch, args: list[Any]) -> tuple[int, ...]:
    shape = tuple(args[0].shape)
    if br.output_kind == CLASS:
        return shape
    return shape[:1]
