"""`--format torch`: one standalone Python file, depending only on torch, with an `nn.Module` per found loss.

The file is assembled from the registry (operator helpers), the runtime modules (inputs, reduction, base
modules; real modules, tested here and copied whole) and the expression compiler's own `generate_source`, so
an exported loss computes what autoloss computed during the search, value for value and gradient for
gradient.
"""

from __future__ import annotations

import ast

from autoloss.export.generated import (
    bound_names,
    class_doc,
    default_comment,
    docstring,
    function_names,
    loss_function_source,
    merge_imports,
    runtime_source,
)
from autoloss.export.ops_source import helper_source, names_used
from autoloss.export.source import ExportSource
from autoloss.loss import Loss

RUNTIME = ("torch_modules",)  # with the runtime modules it imports from
BASES = {"cls-sigmoid": "_SigmoidClsLoss", "cls-softmax": "_SoftmaxClsLoss", "reg": "_RegLoss"}
CALLS = {
    "cls-sigmoid": "loss(logits [N, K], labels [N], iou=None, weight=None, avg_factor=None)",
    "cls-softmax": "loss(logits [N, K+1], labels [N] (0 = background), iou=None, weight=None, "
    "avg_factor=None)",
    "reg": "loss(pred_boxes [N, 4], target_boxes [N, 4], weight=None, avg_factor=None)  # xyxy pixels",
}
EXTRA = {
    "cls-sigmoid": "The unreduced values are multiplied by focal's alpha_t (alpha=0.25 for positive entries, "
    "0.75 for negatives) as in the one-stage search; alpha=None turns that off.",
    "cls-softmax": "",
    "reg": "",
}


def class_name(role: str, prefix: str) -> str:
    return f"{prefix}{role.capitalize()}Loss"


def assemble(src: ExportSource, runtime: tuple[str, ...], header: str, classes: list[str]) -> str:
    """Module docstring, imports, operator helpers, the runtime modules `runtime` (and those they import
    from), generated functions, then `classes`."""
    exprs = [f.loss.expr for f in src.losses if f.loss is not None]
    imports, helpers = helper_source(names_used(exprs))
    functions = [
        default_comment(f.role, f.branch) if f.loss is None else loss_function_source(f.role, f.loss)
        for f in src.found
    ]
    taken = bound_names(ast.parse(code) for code in [helpers, *functions, *classes])
    runtime_imports, runtime_code = runtime_source(runtime, taken)
    imports = ["from __future__ import annotations", *imports, *runtime_imports]
    parts = [
        docstring(header, 0),
        "\n".join(merge_imports(imports)) + "\n",
        "# --- operators (autoloss.ops: the reference semantics and guards) -------------------------\n\n"
        + (helpers if helpers.strip() else "# (these losses use no operator helpers)\n"),
        runtime_code,
        "# --- the found losses ---------------------------------------------------------------------\n",
        *functions,
        *classes,
    ]
    return "\n\n".join(p.rstrip("\n") + "\n" for p in parts).rstrip("\n") + "\n"


def class_source(role: str, loss: Loss, origin: str, name: str, base: str, call: str, extra: str) -> str:
    """A generated subclass of a runtime base: its expression function, inputs read and docstring."""
    public, _ = function_names(role)
    br_inputs = _inputs(loss.branch)
    reads = tuple(n for n in br_inputs if n in loss.expr.inputs)
    return (
        f"class {name}({base}):\n"
        + docstring(class_doc(loss, origin, call, extra), 4)
        + "\n"
        + f"    branch = {loss.branch!r}\n"
        + f"    expression = {loss.text!r}\n"
        + f"    reads = {reads!r}\n"
        + f"    loss_fn = staticmethod({public})\n"
    )


def _inputs(branch_name: str) -> tuple[str, ...]:
    from autoloss.spaces.branches import branch

    return branch(branch_name).inputs


def header(src: ExportSource, what: str, usage: str) -> str:
    from autoloss import __version__

    found = "\n".join(
        f"{f.role} ({f.branch}): {f.loss.text if f.loss else 'default (the detector default won)'}"
        for f in src.found
    )
    return (
        f"{what} exported by autoloss {__version__} ({src.origin}).\n\n"
        f"{found}\n\n"
        "Generated code: the operators, inputs and reductions are autoloss's own definitions, copied\n"
        "so that this file depends on nothing but torch.\n\n"
        f"{usage}"
    )


def torch_source(src: ExportSource, prefix: str = "Searched") -> str:
    """The standalone plain-PyTorch module for `src`."""
    names = [class_name(f.role, prefix) for f in src.losses]
    usage_lines = ["Usage:", ""]
    for f, name in zip(src.losses, names, strict=True):
        call = CALLS[f.branch].replace("loss(", f"{name}()(")
        usage_lines.append(f"    {call}")
    classes = [
        class_source(f.role, f.loss, src.origin, name, BASES[f.branch], CALLS[f.branch], EXTRA[f.branch])
        for f, name in zip(src.losses, names, strict=True)
    ]
    all_names = [*names, *(function_names(f.role)[0] for f in src.losses)]
    all_names += ["box_iou", "reg_inputs", "sigmoid_cls_inputs", "softmax_cls_inputs", "reduce_loss"]
    classes.append(f"__all__ = {all_names!r}\n")
    text = header(src, "PyTorch losses", "\n".join(usage_lines) + "\n")
    return assemble(src, RUNTIME, text, classes)
