"""Loss seams of the one-stage heads: FCOS and RetinaNet heads whose `compute_loss` takes searched losses.

Passed to torchvision's detectors through their `head=` constructor argument. With both losses None and
unit weights they compute exactly torchvision's stock losses (focal + GIoU; FCOS keeps its centerness loss).
A searched cls-sigmoid loss is multiplied by focal's alpha_t and normalised like the stock loss (by the
number of foreground locations); a reg loss is applied to decoded pixel boxes of the foreground.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from autoloss.detection.loss_inputs import (
    alpha_t,
    apply_loss,
    paired_iou,
    reg_inputs,
    sigmoid_cls_inputs,
    weighted_sum,
    zero_with_grad,
)

REG_BIAS_INIT = 1.0


class _SeamMixin:
    """Holds the searched losses and weights; one cls and one reg term in the loss dict."""

    def _init_losses(self, cls_loss: Any, reg_loss: Any, cls_weight: float, reg_weight: float) -> None:
        self.cls_loss, self.reg_loss = cls_loss, reg_loss
        self.cls_weight, self.reg_weight = float(cls_weight), float(reg_weight)

    def _sigmoid_cls(self, logits: Tensor, onehot: Tensor, iou: Tensor) -> Tensor:
        """Per-entry alpha_t * loss [N,K] of a searched cls-sigmoid loss."""
        if logits.shape[0] == 0:
            return logits.float()
        values = apply_loss(self.cls_loss, sigmoid_cls_inputs(logits, onehot, iou), tuple(logits.shape))
        return alpha_t(onehot) * values

    def _reg(self, pred: Tensor, target: Tensor) -> Tensor:
        """Per-box searched reg loss [N] on decoded boxes."""
        if pred.shape[0] == 0:
            return pred.float().sum(-1)
        return apply_loss(self.reg_loss, reg_inputs(pred, target), (pred.shape[0],))


class _GroupNorm(nn.GroupNorm):
    """GroupNorm without `F.group_norm`'s refusal of one value per group; same parameters and outputs.

    torchvision's FCOS head uses GroupNorm(32, C). With the tiny backbone's C = 32 each group is one
    channel, and on the 1x1 P7 map of a 128 px image a batch of one image has a single value per group:
    `F.group_norm` raises there (a guard against degenerate training statistics), which made any
    one-image batch (predict, an eval set's last batch) fail. The result is well defined: the normalised
    value is 0 and the output is the layer's bias.
    """

    def forward(self, x: Tensor) -> Tensor:
        return torch.group_norm(
            x, self.num_groups, self.weight, self.bias, self.eps, torch.backends.cudnn.enabled
        )


def _replace_group_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if type(child) is nn.GroupNorm:
            replacement = _GroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
            replacement.load_state_dict(child.state_dict())
            setattr(module, name, replacement)
        else:
            _replace_group_norms(child)


def _matched_targets(targets: list[dict[str, Tensor]], matched_idxs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Per-location GT class (-1 where not foreground) and GT box, stacked over the batch."""
    classes, boxes = [], []
    for target, matched in zip(targets, matched_idxs, strict=True):
        if len(target["labels"]) == 0:
            cls = target["labels"].new_zeros(matched.shape)
            box = target["boxes"].new_zeros((len(matched), 4))
        else:
            cls = target["labels"][matched.clip(min=0)]
            box = target["boxes"][matched.clip(min=0)]
        classes.append(torch.where(matched >= 0, cls, torch.full_like(cls, -1)))
        boxes.append(box)
    return torch.stack(classes), torch.stack(boxes)


def _onehot(gt_classes: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    fg = gt_classes >= 0
    onehot = torch.zeros((*gt_classes.shape, num_classes), dtype=dtype, device=gt_classes.device)
    onehot[fg, gt_classes[fg]] = 1.0
    return onehot


class LossFCOSHead(_SeamMixin, FCOSHead):
    """torchvision's FCOSHead with searched cls-sigmoid / reg losses (None: focal / GIoU)."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        *,
        cls_loss: Any = None,
        reg_loss: Any = None,
        cls_weight: float = 1.0,
        reg_weight: float = 1.0,
    ) -> None:
        super().__init__(in_channels, num_anchors, num_classes, num_convs)
        # torchvision's regression output is relu(conv) with bias 0, so a from-scratch head starts with
        # near-zero-size boxes, where GIoU (and IoU-type losses) have no gradient: a location whose output
        # dips below zero never recovers. A bias of 1 starts every box one stride from its point each way.
        nn.init.constant_(self.regression_head.bbox_reg.bias, REG_BIAS_INIT)
        _replace_group_norms(self)
        self._init_losses(cls_loss, reg_loss, cls_weight, reg_weight)

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        # float32 throughout, stock and searched losses alike: under AMP the decoded boxes and the
        # expressions need the range, and both sides of a comparison must see the same precision
        cls_logits = head_outputs["cls_logits"].float()  # [B, A, K]
        bbox_regression = head_outputs["bbox_regression"].float()  # [B, A, 4]
        bbox_ctrness = head_outputs["bbox_ctrness"].float()  # [B, A, 1]
        gt_classes, gt_boxes = _matched_targets(targets, matched_idxs)
        all_anchors = torch.stack(anchors)
        fg = gt_classes >= 0
        num_fg = max(1, int(fg.sum().item()))
        onehot = _onehot(gt_classes, cls_logits.shape[-1], cls_logits.dtype)
        pred_boxes = self.box_coder.decode(bbox_regression, all_anchors)

        if self.cls_loss is None:
            loss_cls = sigmoid_focal_loss(cls_logits, onehot, reduction="sum")
        else:
            k = cls_logits.shape[-1]
            iou = torch.zeros(fg.shape, device=cls_logits.device)
            iou[fg] = paired_iou(pred_boxes[fg], gt_boxes[fg])
            loss_cls = weighted_sum(
                self._sigmoid_cls(cls_logits.reshape(-1, k), onehot.reshape(-1, k), iou.flatten())
            )
        if self.reg_loss is None:
            loss_reg = generalized_box_iou_loss(pred_boxes[fg], gt_boxes[fg], reduction="sum")
        elif not fg.any():
            loss_reg = zero_with_grad(bbox_regression)
        else:
            loss_reg = weighted_sum(self._reg(pred_boxes[fg], gt_boxes[fg]))

        loss_ctr = _centerness_loss(self.box_coder, all_anchors, gt_boxes, bbox_ctrness, fg)
        return {
            "classification": self.cls_weight * loss_cls / num_fg,
            "bbox_regression": self.reg_weight * loss_reg / num_fg,
            "bbox_ctrness": loss_ctr / num_fg,
        }


def _centerness_loss(
    box_coder: Any, anchors: Tensor, gt_boxes: Tensor, ctrness: Tensor, fg: Tensor
) -> Tensor:
    """FCOS's stock centerness BCE (torchvision's code path), kept unchanged by the seam."""
    reg_targets = box_coder.encode(anchors, gt_boxes)
    if len(reg_targets) == 0:
        ctr_targets = reg_targets.new_zeros(reg_targets.size()[:-1])
    else:
        left_right, top_bottom = reg_targets[:, :, [0, 2]], reg_targets[:, :, [1, 3]]
        ctr_targets = torch.sqrt(
            (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
            * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
        )
    return nn.functional.binary_cross_entropy_with_logits(
        ctrness.squeeze(dim=2)[fg], ctr_targets[fg], reduction="sum"
    )


class LossRetinaNetHead(_SeamMixin, RetinaNetHead):
    """torchvision's RetinaNetHead with searched losses (None: focal / GIoU, as torchvision's v2 model).

    RetinaNet normalises per image (by that image's foreground count) and averages over images; the seam
    does the same, and leaves out the anchors between the matcher's thresholds from classification.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        norm_layer: Any = None,
        *,
        cls_loss: Any = None,
        reg_loss: Any = None,
        cls_weight: float = 1.0,
        reg_weight: float = 1.0,
    ) -> None:
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        # GIoU on decoded boxes (torchvision's RetinaNet v2 choice) instead of L1 on deltas: the default
        # reg loss then lives in the same I/U/E space as the searched ones.
        self.regression_head._loss_type = "giou"
        self._init_losses(cls_loss, reg_loss, cls_weight, reg_weight)

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        # float32 for the stock losses too: under AMP the head outputs are half precision, and a stock
        # focal/GIoU computed in bf16 against searched ones in float32 would not be a fair comparison
        head_outputs = {key: value.float() for key, value in head_outputs.items()}
        if self.cls_loss is None:
            loss_cls = self.classification_head.compute_loss(targets, head_outputs, matched_idxs)
        if self.reg_loss is None:
            loss_reg = self.regression_head.compute_loss(targets, head_outputs, anchors, matched_idxs)
        if self.cls_loss is not None or self.reg_loss is not None:
            routed_cls, routed_reg = self._routed(targets, head_outputs, anchors, matched_idxs)
            loss_cls = routed_cls if self.cls_loss is not None else loss_cls
            loss_reg = routed_reg if self.reg_loss is not None else loss_reg
        return {"classification": self.cls_weight * loss_cls, "bbox_regression": self.reg_weight * loss_reg}

    def _routed(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        cls_logits = head_outputs["cls_logits"]  # [B, A, K], float32 (compute_loss casts)
        bbox_regression = head_outputs["bbox_regression"]  # [B, A, 4]
        batch, _, k = cls_logits.shape
        matched = torch.stack(matched_idxs)
        gt_classes, gt_boxes = _matched_targets(targets, matched_idxs)
        fg = matched >= 0
        valid = matched != self.classification_head.BETWEEN_THRESHOLDS
        per_image_fg = fg.sum(dim=1).clamp(min=1).float()
        image_of = torch.arange(batch, device=matched.device)[:, None].expand_as(matched)
        coder = self.regression_head.box_coder
        pred_boxes = coder.decode_single(bbox_regression.reshape(-1, 4), torch.stack(anchors).reshape(-1, 4))
        pred_boxes = pred_boxes.reshape(batch, -1, 4)

        loss_cls = loss_reg = zero_with_grad(cls_logits)
        if self.cls_loss is not None:
            onehot = _onehot(gt_classes, k, cls_logits.dtype)
            iou = torch.zeros(fg.shape, device=cls_logits.device)
            iou[fg] = paired_iou(pred_boxes[fg], gt_boxes[fg])
            values = self._sigmoid_cls(cls_logits[valid], onehot[valid], iou[valid]).sum(dim=1)
            per_image = torch.zeros(batch, device=values.device).index_add(0, image_of[valid], values)
            loss_cls = (per_image / per_image_fg).sum() / batch
        if self.reg_loss is not None and fg.any():
            values = self._reg(pred_boxes[fg], gt_boxes[fg])
            per_image = torch.zeros(batch, device=values.device).index_add(0, image_of[fg], values)
            loss_reg = (per_image / per_image_fg).sum() / batch
        elif self.reg_loss is not None:
            loss_reg = zero_with_grad(bbox_regression)
        return loss_cls, loss_reg
