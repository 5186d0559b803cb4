"""The regression branch's inputs from boxes: intersection, union and enclosing area of paired xyxy boxes.

One definition shared by the detector seam (detection) and the filters' probes (checks), so that the
filters judge a loss on exactly the inputs a detector will give it. (Exported files carry a copy: they
must run without autoloss.)
"""

from __future__ import annotations

from typing import Any

BOX_EPS = 1e-7  # torchvision's GIoU eps, added to U and E as the reference does


def box_terms(pred: Any, target: Any, eps: float = 0.0) -> tuple[Any, Any, Any]:
    """I, U + eps and E + eps of paired xyxy boxes [N, 4] (pixels); differentiable in both."""
    import torch

    x1, y1, x2, y2 = pred.unbind(-1)
    tx1, ty1, tx2, ty2 = target.unbind(-1)
    # clamp-at-zero equals torchvision's masked intersection in value and gradient
    inter = (torch.minimum(x2, tx2) - torch.maximum(x1, tx1)).clamp(min=0) * (
        torch.minimum(y2, ty2) - torch.maximum(y1, ty1)
    ).clamp(min=0)
    union = (x2 - x1) * (y2 - y1) + (tx2 - tx1) * (ty2 - ty1) - inter
    enclose = (torch.maximum(x2, tx2) - torch.minimum(x1, tx1)) * (
        torch.maximum(y2, ty2) - torch.minimum(y1, ty1)
    )
    return inter, union + eps, enclose + eps
