"""`--format mmdet`: a Python module with MMDetection 3.x loss classes and the config snippet to use them.

MMDetection 3.3 does not import on a CPU-only machine without mmcv's compiled ops, so the module guards its
one MMDetection import: without it the classes are plain torch modules (tested), with it they register in
`MODELS`.
"""

from __future__ import annotations

from autoloss.export.source import ONE_STAGE, REG_WEIGHTS, TWO_STAGE, ExportSource
from autoloss.export.torch_format import EXTRA, assemble, class_name, class_source, header

RUNTIME = ("mmdet_modules",)  # with the runtime modules it imports from
BASES = {"cls-sigmoid": "_MMDetSigmoidClsLoss", "cls-softmax": "_MMDetSoftmaxClsLoss", "reg": "_MMDetRegLoss"}
CALL = "loss(pred, target, weight=None, avg_factor=None, reduction_override=None)"
TARGETS = {
    "cls-sigmoid": "pred [N, K] logits; target labels [N] (K = background) or (labels, iou)",
    "cls-softmax": "pred [N, K+1] logits; target labels [N] (K = background) or (labels, iou)",
    "reg": "pred, target [N, 4] decoded xyxy pixel boxes; weight [N] or [N, 4]",
}


def _cls_dict(name: str, branch: str) -> str:
    if branch == "cls-sigmoid":
        return f"dict(type='{name}', use_sigmoid=True, alpha=0.25, loss_weight=1.0, _delete_=True)"
    return f"dict(type='{name}', use_sigmoid=False, loss_weight=1.0, _delete_=True)"


def config_snippet(src: ExportSource, prefix: str = "Searched", module: str = "autoloss_losses") -> str:
    """The MMDetection 3.x config lines that use the exported classes (plain text, not commented)."""
    found = {f.role: f for f in src.losses}
    cls, reg = found.get("cls"), found.get("reg")
    two_stage = (cls is not None and cls.branch == "cls-softmax") or src.detector in TWO_STAGE
    one_stage = (cls is not None and cls.branch == "cls-sigmoid") or src.detector in ONE_STAGE
    lines = [f"custom_imports = dict(imports=['{module}'], allow_failed_imports=False)"]
    if not found:
        return "# The detector defaults won for every branch: nothing to change in the config.\n"
    if one_stage or not two_stage:
        entries = []
        if cls is not None:
            entries.append(f"        loss_cls={_cls_dict(class_name('cls', prefix), cls.branch)},")
        if reg is not None:
            entries.append(
                f"        loss_bbox=dict(type='{class_name('reg', prefix)}', "
                f"loss_weight={REG_WEIGHTS['fcos']}),"
            )
        lines += [
            "model = dict(",
            "    bbox_head=dict(  # one-stage heads: FCOS, ATSS, RetinaNet, ...",
            *entries,
            "    ))",
        ]
        if reg is not None:
            lines.append(
                "# Anchor-based heads (RetinaNet, ATSS) also need reg_decoded_bbox=True in bbox_head."
            )
    if two_stage or not one_stage:
        entries = []
        if reg is not None:
            entries.append("            reg_decoded_bbox=True,  # the reg loss reads decoded xyxy boxes")
        if cls is not None:
            entries.append(f"            loss_cls={_cls_dict(class_name('cls', prefix), cls.branch)},")
        if reg is not None:
            entries.append(
                f"            loss_bbox=dict(type='{class_name('reg', prefix)}', "
                f"loss_weight={REG_WEIGHTS['faster_rcnn']}),"
            )
        if not one_stage and not two_stage:
            lines.append("# or, in a two-stage detector (Faster R-CNN, Cascade R-CNN, ...):")
        lines += ["model = dict(", "    roi_head=dict(", "        bbox_head=dict(", *entries, "        )))"]
    if cls is not None and cls.loss is not None:
        needs = {"Q", "Z"} & cls.loss.expr.inputs
        if needs:
            lines += [
                f"# {class_name('cls', prefix)} reads the IoU ({', '.join(sorted(needs))}): the head must "
                "call",
                "# loss_cls(cls_score, (labels, iou), ...), as GFLHead does for QualityFocalLoss.",
            ]
    return "\n".join(lines) + "\n"


def mmdet_source(src: ExportSource, prefix: str = "Searched", module: str = "autoloss_losses") -> str:
    """The MMDetection module for `src`, ending with its config snippet as a comment."""
    classes = []
    for f in src.losses:
        name = class_name(f.role, prefix)
        call = f"{CALL}\n    {TARGETS[f.branch]}"
        body = class_source(f.role, f.loss, src.origin, name, BASES[f.branch], call, EXTRA[f.branch])
        classes.append(f"@MODELS.register_module()\n{body}")
    names = [class_name(f.role, prefix) for f in src.losses]
    classes.append(f"__all__ = {names!r}\n")
    snippet = config_snippet(src, prefix, module)
    classes.append(
        "# --- MMDetection 3.x config ----------------------------------------------------------------\n"
        + "\n".join(f"# {line}" if line else "#" for line in snippet.rstrip("\n").split("\n"))
        + "\n"
    )
    usage = (
        f"Usage: save as {module}.py where Python can import it, then in the config:\n\n"
        + "\n".join(f"    {line}" for line in snippet.rstrip("\n").split("\n"))
        + "\n\nWithout MMDetection installed the classes are plain torch modules (nothing is registered).\n"
    )
    text = header(src, "MMDetection 3.x losses", usage)
    return assemble(src, RUNTIME, text, classes)
