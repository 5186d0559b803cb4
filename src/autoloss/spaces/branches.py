"""The three search spaces: which inputs each loss branch reads, which operators it may use, and the
shape rules that keep an expression meaningful for its detector head (the
inputs themselves are built in `detection/loss_inputs.py`).

Shapes are tracked as kinds, not sizes:
- `scalar`: a constant subtree, broadcasts anywhere;
- `class`: one value per class, [N, C] (the cls inputs);
- `row`: one value per RoI / box, [N] (the reg inputs, and `Dot` of two class values).
"""

from __future__ import annotations

from dataclasses import dataclass

from autoloss.errors import ExprError
from autoloss.expr.tree import Expr
from autoloss.ops import OPS

# The one table of which classification branch each detector's head searches: one-stage heads score
# each class with a sigmoid, Faster R-CNN's RoI head with a softmax over classes plus background.
DETECTOR_CLS_BRANCH = {"fcos": "cls-sigmoid", "retinanet": "cls-sigmoid", "faster_rcnn": "cls-softmax"}
# The weight of a searched reg loss (on decoded boxes) in each detector's total loss, after the reference
# configs: two-stage 10 (the GIoU-style Faster R-CNN configs), one-stage 1. The detectors and the export
# both read it.
DETECTOR_REG_WEIGHT = {"fcos": 1.0, "retinanet": 1.0, "faster_rcnn": 10.0}
# Focal loss's alpha: one-stage heads weigh a cls-sigmoid loss by alpha_t (alpha on positives, 1 - alpha
# on negatives) outside the expression, as torchvision's focal loss does; MOS and the export do the same.
FOCAL_ALPHA = 0.25

SCALAR, CLASS, ROW = "scalar", "class", "row"


@dataclass(frozen=True)
class Branch:
    name: str
    inputs: tuple[str, ...]
    input_kind: str
    output_kind: str
    ops: frozenset[str]
    prediction: frozenset[str]  # a loss must read one of these...
    target: frozenset[str]  # ...and one of these, or it cannot train anything
    doc: str

    @property
    def output_doc(self) -> str:
        return "[N]" if self.output_kind == ROW else "[N, K]"


_ALL = frozenset(OPS)
_REG_OPS = frozenset("Add Sub Mul Div Neg Log Exp Abs Sqrt Softplus Sig Tanh Relu Sin Cos".split())

BRANCHES: dict[str, Branch] = {
    b.name: b
    for b in (
        Branch(
            "cls-softmax",
            ("X", "Y", "Z"),
            CLASS,
            ROW,
            _ALL,
            frozenset({"X"}),
            frozenset({"Y"}),
            "two-stage RoI head: X logits [N,K+1], Y one-hot [N,K+1], Z IoU (1 for background); "
            "value per RoI after Dot",
        ),
        Branch(
            "cls-sigmoid",
            ("X", "Q", "PY", "NY"),
            CLASS,
            CLASS,
            _ALL - {"Dot"},
            frozenset({"X"}),
            frozenset({"Q", "PY", "NY"}),
            "one-stage head: X logits [N,K], Q IoU at the GT class of positives, PY one-hot y, NY 1-y; "
            "value per element",
        ),
        Branch(
            "reg",
            ("I", "U", "E"),
            ROW,
            ROW,
            _REG_OPS,
            frozenset({"I"}),
            frozenset({"U", "E"}),
            "box regression: I intersection, U union, E enclosing-box area (pixel^2); value per box",
        ),
    )
}

# Short names users may type.
BRANCH_ALIASES = {"softmax": "cls-softmax", "sigmoid": "cls-sigmoid", "box": "reg"}


def branch(name: str) -> Branch:
    name = BRANCH_ALIASES.get(name, name)
    try:
        return BRANCHES[name]
    except KeyError:
        raise ExprError(f"unknown branch {name!r}; branches: {', '.join(BRANCHES)}") from None


def infer_branch(expr: Expr) -> Branch:
    """The branch an expression belongs to, judged from the inputs it reads."""
    used = expr.inputs
    matches = [b for b in BRANCHES.values() if used and used <= set(b.inputs)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ExprError(
            f"inputs {', '.join(sorted(used)) or '(none)'} do not belong to one branch; "
            "say which with --branch: "
            + "; ".join(f"{b.name}: {', '.join(b.inputs)}" for b in BRANCHES.values())
        )
    # Only X is read: the class-axis reduction decides between the two classification branches.
    return BRANCHES["cls-softmax"] if "Dot" in expr.ops_used else BRANCHES["cls-sigmoid"]


def kind_of(expr: Expr, br: Branch) -> str:
    """The shape kind of `expr` in branch `br`; raises `ExprError` on a shape-rule violation."""
    if expr.is_const:
        return SCALAR
    if expr.is_input:
        if expr.head not in br.inputs:
            raise ExprError(
                f"unknown input {expr.head!r} for branch {br.name}; inputs are {', '.join(br.inputs)}"
            )
        return br.input_kind
    op = OPS[expr.head]
    if op.name not in br.ops:
        raise ExprError(f"operator {op.name!r} is not allowed in branch {br.name}")
    kinds = [kind_of(a, br) for a in expr.args]
    if op.needs_classes and kinds[0] != CLASS:
        raise ExprError(
            f"{op.name} needs a per-class value (it works over the class axis), got a {kinds[0]} in "
            f"{expr.text}"
        )
    if op.reduces_classes:
        if ROW in kinds:
            raise ExprError(f"Dot reduces over classes, but an argument is already per-RoI in {expr.text}")
        return ROW
    nonscalar = {k for k in kinds if k != SCALAR}
    if len(nonscalar) > 1:
        raise ExprError(
            f"{op.name} mixes a per-class value with a per-RoI value in {expr.text}; "
            "reduce both with Dot first"
        )
    return nonscalar.pop() if nonscalar else SCALAR


def check_shapes(expr: Expr, br: Branch) -> None:
    """Raise `ExprError` unless `expr` obeys the shape rules of `br` and yields one value per output."""
    kind = kind_of(expr, br)
    # A constant is well-shaped (it broadcasts); that it cannot train is the validity filter's verdict.
    if kind in (br.output_kind, SCALAR):
        return
    if br.name == "cls-softmax" and kind == CLASS:
        raise ExprError(
            "a cls-softmax expression must reduce over classes with Dot to one value per RoI, "
            f"e.g. Neg(Dot(Y,Log(Softmax(X)))); {expr.text} is per class"
        )
    raise ExprError(
        f"{expr.text} is {kind}-valued, but branch {br.name} needs one value per "
        f"{'element' if br.output_kind == CLASS else 'box' if br.name == 'reg' else 'RoI'}"
    )
