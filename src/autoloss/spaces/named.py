"""The named losses: the baselines and the four published CSE-Autoloss losses (Liu et al.,
"Loss Function Discovery for Object Detection via Convergence-Simulation Driven Search", ICLR 2021).

Baselines are written in the same expression language so that they go through the very same
filters, seams and compiled code as searched losses — a comparison on equal terms.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedLoss:
    name: str
    branch: str
    text: str
    doc: str


# log(sigmoid(x)) = -softplus(-x) and log(1 - sigmoid(x)) = -softplus(x): written this way the
# baselines stay exact at saturated logits, as torchvision's logit-based references are.
_P = "Sig(X)"
_FOCAL = (
    f"Add(Mul(PY,Mul(Mul(Sub(1,{_P}),Sub(1,{_P})),Softplus(Neg(X)))),Mul(NY,Mul(Mul({_P},{_P}),Softplus(X))))"
)

NAMED: dict[str, NamedLoss] = {
    n.name: n
    for n in (
        NamedLoss("ce", "cls-softmax", "Neg(Dot(Y,Log(Softmax(X))))", "softmax cross-entropy"),
        NamedLoss(
            "focal", "cls-sigmoid", _FOCAL, "sigmoid focal loss, gamma 2, without alpha (Lin et al. 2017)"
        ),
        NamedLoss(
            "bce", "cls-sigmoid", "Add(Mul(PY,Softplus(Neg(X))),Mul(NY,Softplus(X)))", "binary cross-entropy"
        ),
        NamedLoss("iou", "reg", "Sub(1,Div(I,U))", "IoU loss, 1 - I/U"),
        NamedLoss("giou", "reg", "Add(Sub(1,Div(I,U)),Div(Sub(E,U),E))", "GIoU loss, 1 - I/U + (E - U)/E"),
        NamedLoss(
            "cse-a-cls",
            "cls-softmax",
            "Neg(Dot(Mul(Y,Add(1,Sin(Z))),Log(Softmax(X))))",
            "CSE-Autoloss-A (two-stage) classification: cross-entropy re-weighted by 1 + sin(IoU)",
        ),
        NamedLoss(
            "cse-a-reg",
            "reg",
            "Add(1,Neg(Add(Div(I,U),Neg(Div(Add(E,Neg(Add(I,2))),E)))))",
            "CSE-Autoloss-A regression: (1 - I/U) + (1 - (I + 2)/E)",
        ),
        NamedLoss(
            "cse-b-cls",
            "cls-sigmoid",
            "Neg(Add(Mul(Q,Mul(Add(1,Serf(Sig(NY))),Log(Sig(X)))),Mul(Add(Sgdf(X),Neg(Q)),"
            "Mul(Add(Add(1,Neg(Q)),Neg(Add(1,Neg(Sig(X))))),Log(Add(1,Neg(Sig(X))))))))",
            "CSE-Autoloss-B (one-stage) classification",
        ),
        NamedLoss(
            "cse-b-reg",
            "reg",
            "Neg(Div(Add(Div(Neg(Add(Neg(E),Add(1,I))),Neg(Add(3,Add(2,U)))),Add(Div(E,E),Div(Neg(E),Neg(1)))),"
            "Neg(Add(Div(Neg(Add(U,Div(I,1))),Neg(3)),Neg(E)))))",
            "CSE-Autoloss-B regression",
        ),
    )
}

# The detector default each branch falls back to when a search leaves it alone.
DEFAULTS = {"cls-softmax": "ce", "cls-sigmoid": "focal", "reg": "giou"}

# The published pair for each classification branch: CSE-Autoloss-B for one-stage heads, -A for two-stage.
PUBLISHED = {"cls-sigmoid": ("cse-b-cls", "cse-b-reg"), "cls-softmax": ("cse-a-cls", "cse-a-reg")}


def name_of(text: str) -> str | None:
    """The named loss whose expression is exactly `text`, if any (for readable tables)."""
    for entry in NAMED.values():
        if entry.text == text:
            return entry.name
    return None


def label(text: str, width: int = 60) -> str:
    """A short label for tables: a loss's name, "default", or its text cut to `width` characters."""
    name = name_of(text)
    if name is not None:
        return name
    return text if len(text) <= width else text[: width - 1] + "…"
