"""Pieces every exported Python file is made of: the runtime modules' text, the generated loss functions
and the class docstrings (formula, LaTeX, inputs, shapes)."""

from __future__ import annotations

import re
import sys
import textwrap
from importlib import resources

from autoloss.expr.codegen import generate_source
from autoloss.loss import Loss
from autoloss.spaces.branches import branch as lookup_branch
from autoloss.spaces.named import DEFAULTS

WRAP = 100  # prose width in generated docstrings; formulas are never wrapped
BEGIN, END = "# export: begin", "# export: end"

# What each raw input is (as `detection/loss_inputs.py` builds it), for docstrings.
INPUT_DOCS = {
    "cls-softmax": {
        "X": "logits [N, K+1]",
        "Y": "one-hot target [N, K+1]",
        "Z": "IoU of the RoI's decoded box with its ground truth for foreground RoIs, 1 for background; "
        "[N] or [N, K+1]; detached",
    },
    "cls-sigmoid": {
        "X": "logits [N, K]",
        "Q": "IoU of the positive's decoded box at its ground-truth class, 0 elsewhere [N, K]; detached",
        "PY": "one-hot target y [N, K]",
        "NY": "1 - y [N, K]",
    },
    "reg": {
        "I": "intersection area [N] of decoded xyxy boxes, pixel^2",
        "U": "union area + 1e-7 [N]",
        "E": "smallest enclosing box area + 1e-7 [N]",
    },
}
OUTPUT_DOCS = {
    "cls-softmax": "[N], one per RoI",
    "cls-sigmoid": "[N, K], one per element",
    "reg": "[N], one per box",
}


def runtime_part(module: str) -> tuple[list[str], str]:
    """(import lines, exported body) of `autoloss/export/runtime/<module>.py`, read as text."""
    text = (resources.files("autoloss.export.runtime") / f"{module}.py").read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    body, _, _ = rest.partition(END)
    imports = [
        line
        for line in head.splitlines()
        if re.match(r"(import |from \S+ import )", line) and not line.startswith(("from autoloss", "from __"))
    ]
    return imports, body.strip("\n") + "\n"


def merge_imports(lines: list[str]) -> list[str]:
    """Import lines deduplicated, `from m import a` and `from m import b` merged, stdlib before torch."""
    plain: set[str] = set()
    names: dict[str, set[str]] = {}
    for line in lines:
        m = re.match(r"from (\S+) import (.+)", line)
        if m:
            names.setdefault(m.group(1), set()).update(n.strip() for n in m.group(2).split(","))
        elif line.startswith("import "):
            plain.add(line)
    entries = [(line.split()[1], line) for line in plain]
    entries += [(mod, f"from {mod} import {', '.join(sorted(ns))}") for mod, ns in names.items()]

    def group(module: str) -> int:
        top = module.split(".")[0]
        return 0 if top == "__future__" else 1 if top in sys.stdlib_module_names else 2

    out: list[str] = []
    last = None
    for module, line in sorted(entries, key=lambda e: (group(e[0]), e[1].startswith("from "), e[0])):
        if last is not None and group(module) != last:
            out.append("")  # a blank line between __future__, standard library and third-party imports
        out.append(line)
        last = group(module)
    return out


def function_names(role: str) -> tuple[str, str]:
    """(public unreduced function, raw generated function) names for a role ("cls" or "reg")."""
    return f"{role}_loss", f"_{role}_loss_expr"


def loss_function_source(role: str, loss: Loss) -> str:
    """The generated expression function plus the public unreduced function with broadcasting."""
    public, raw = function_names(role)
    br = lookup_branch(loss.branch)
    inputs = br.inputs
    raw_src = generate_source(loss.expr, inputs, raw)
    params = ", ".join([inputs[0], *(f"{n}=None" for n in inputs[1:])]) if role == "cls" else None
    if role == "cls":
        shape = "X.shape" if br.output_kind == br.input_kind else "X.shape[:1]"
        body = f"    args = class_inputs({', '.join(inputs)})\n    return fit({raw}(*args), tuple({shape}))\n"
    else:
        params = ", ".join(f"{n}=None" for n in inputs)
        body = (
            f"    args = row_inputs({', '.join(inputs)})\n"
            f"    return fit({raw}(*args), tuple(args[0].shape[:1]))\n"
        )
    doc = (
        f"Unreduced {loss.branch} loss {OUTPUT_DOCS[loss.branch]}: {loss.infix()}\n\n"
        + "\n".join(f"{n}: {INPUT_DOCS[loss.branch][n]}" for n in inputs)
        + "\nInputs the expression does not read may be None."
    )
    return f"{raw_src}\n\ndef {public}({params}):\n{docstring(doc, 4)}{body}"


def docstring(text: str, indent: int) -> str:
    """`text` as an indented docstring literal; raw when it holds backslashes (LaTeX) and a raw string can."""
    pad = " " * indent
    prefix = ""
    if "\\" in text:
        if '"""' in text or text.endswith("\\"):
            text = text.replace("\\", "\\\\")
        else:
            prefix = "r"
    text = text.replace('"""', '\\"\\"\\"')
    lines = text.rstrip("\n").split("\n")
    body = "\n".join([lines[0], *((pad + line) if line else "" for line in lines[1:])])
    closing = f"\n{pad}" if len(lines) > 1 else ""
    return f'{pad}{prefix}"""{body}{closing}"""\n'


def default_comment(role: str, branch_name: str) -> str:
    default = DEFAULTS.get(branch_name, "default")
    return (
        f"# {role} ({branch_name}): the detector's default loss ({default}) won the search, so there is\n"
        f"# nothing to export for this branch: keep your detector's default {role} loss.\n"
    )


def class_doc(loss: Loss, origin: str, call: str, extra: str = "") -> str:
    """Docstring of a generated loss class: where it came from, formula, LaTeX, inputs, output, usage."""
    br = loss.branch
    lines = [
        f"{loss.name or 'Searched'} {br} loss, exported by autoloss ({origin}).",
        "",
        f"Formula: {loss.infix()}",
        f"LaTeX: {loss.latex()}",
        f"Expression: {loss.text}",
        "",
        f"Call: {call}",
        f"Raw inputs (forward_raw / {function_names('cls' if br != 'reg' else 'reg')[0]}):",
        *(f"    {n}: {doc}" for n, doc in INPUT_DOCS[br].items()),
        f"Unreduced value: {OUTPUT_DOCS[br]}.",
        *(textwrap.wrap(extra, WRAP) if extra else []),
        *textwrap.wrap(
            'Then `weight` multiplies each value, `reduction` ("none" | "mean" | "sum"; "mean" divides by '
            "`avg_factor` when given) reduces, and `loss_weight` scales the result.",
            WRAP,
        ),
    ]
    return "\n".join(lines) + "\n"
