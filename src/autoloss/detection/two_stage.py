"""Loss seam of the two-stage RoI head: torchvision's RoIHeads with a searched cls-softmax / reg loss.

torchvision's `RoIHeads.forward` calls the module-level `fastrcnn_loss`; this subclass re-implements only the
training path (sample, pool, box head, predictor, then the losses) and leaves inference to the parent.
The RPN keeps its stock loss. Normalisation follows the stock loss (and MMDetection's GIoU config): both
terms are divided by the number of sampled RoIs. A batch with no foreground RoI gives a zero reg loss that
still has a gradient path (the public reference crashes there).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss

from autoloss.detection.loss_inputs import (
    apply_loss,
    paired_iou,
    reg_inputs,
    softmax_cls_inputs,
    weighted_sum,
    zero_with_grad,
)


class LossRoIHeads(RoIHeads):
    """RoIHeads whose box losses are searched losses (None: torchvision's cross-entropy / smooth L1)."""

    def __init__(
        self,
        *args: Any,
        cls_loss: Any = None,
        reg_loss: Any = None,
        cls_weight: float = 1.0,
        reg_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.has_mask() or self.has_keypoint():
            raise ValueError("LossRoIHeads supports box detection only (no mask or keypoint heads)")
        self.cls_loss, self.reg_loss = cls_loss, reg_loss
        self.cls_weight, self.reg_weight = float(cls_weight), float(reg_weight)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        self.check_targets(targets)
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        losses = self.box_losses(
            class_logits, box_regression, proposals, matched_idxs, labels, regression_targets, targets
        )
        return [], losses

    def box_losses(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        matched_idxs: list[Tensor],
        labels: list[Tensor],
        regression_targets: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """{"loss_classifier", "loss_box_reg"} over the sampled RoIs of the batch, in float32.

        Under AMP the predictor's outputs are half precision; the stock cross-entropy / smooth L1 get the
        same float32 cast as the searched losses, so neither side of a comparison loses precision.
        """
        class_logits, box_regression = class_logits.float(), box_regression.float()
        if self.cls_loss is None or self.reg_loss is None:
            stock_cls, stock_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        all_labels = torch.cat(labels)
        num_rois = max(1, all_labels.numel())
        fg = torch.where(all_labels > 0)[0]
        # decoded boxes only for foreground RoIs, with the deltas predicted for their GT class
        deltas = box_regression.reshape(len(all_labels), -1, 4)[fg, all_labels[fg]]
        fg_boxes = self.box_coder.decode_single(deltas, torch.cat(proposals)[fg].float())
        gt_boxes = torch.cat([_gt_boxes(t, m) for t, m in zip(targets, matched_idxs, strict=True)])[
            fg
        ].float()

        if self.cls_loss is None:
            loss_cls = stock_cls
        else:
            fg_iou = torch.zeros(len(all_labels), device=class_logits.device)
            fg_iou[fg] = paired_iou(fg_boxes, gt_boxes)
            inputs = softmax_cls_inputs(class_logits, all_labels, fg_iou)
            loss_cls = weighted_sum(apply_loss(self.cls_loss, inputs, (len(all_labels),))) / num_rois
        if self.reg_loss is None:
            loss_reg = stock_reg
        elif len(fg) == 0:
            loss_reg = zero_with_grad(box_regression)
        else:
            values = apply_loss(self.reg_loss, reg_inputs(fg_boxes, gt_boxes), (len(fg),))
            loss_reg = weighted_sum(values) / num_rois
        return {"loss_classifier": self.cls_weight * loss_cls, "loss_box_reg": self.reg_weight * loss_reg}


def _gt_boxes(target: dict[str, Tensor], matched: Tensor) -> Tensor:
    """GT box of each sampled RoI (zeros for an image without boxes: all its RoIs are background)."""
    if target["boxes"].numel() == 0:
        return target["boxes"].new_zeros((len(matched), 4))
    return target["boxes"][matched]
