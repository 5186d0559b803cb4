"""`build_detector`: torchvision FCOS, RetinaNet and Faster R-CNN with a loss seam, sized for small images.

No pretrained weights are downloaded; a local state dict can be loaded. Faster R-CNN is trimmed for CPU
(DESIGN.md: RoIAlign backward dominates): 128 sampled RoIs per image, a 256-wide box head and
`sampling_ratio=1`. Every detector takes dataset labels 1..K; the one-stage ones see 0..K-1 inside, so
their sigmoid heads have exactly K classes and a searched cls-sigmoid loss sees X of shape [N,K].
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from autoloss.detection.backbones import build_backbone
from autoloss.detection.loss_spec import resolve_loss
from autoloss.detection.one_stage import LossFCOSHead, LossRetinaNetHead
from autoloss.detection.two_stage import LossRoIHeads

DETECTORS = ("fcos", "retinanet", "faster_rcnn")
CLS_BRANCH = {"fcos": "cls-sigmoid", "retinanet": "cls-sigmoid", "faster_rcnn": "cls-softmax"}
# Reference loss weights: two-stage reg 10 on decoded boxes (GIoU-style config), one-stage 1. Faster
# R-CNN's stock smooth-L1 on deltas keeps torchvision's weight 1.
ONE_STAGE_REG_WEIGHT, TWO_STAGE_REG_WEIGHT, STOCK_REG_WEIGHT = 1.0, 10.0, 1.0
# The tiny FCOS head has 2 convs per branch instead of 4: the head is most of a tiny step's time on CPU.
TINY_FCOS_HEAD_CONVS = 2
SCORE_THRESH = 0.05  # COCO-eval convention; FCOS's own 0.2 would cut recall of briefly trained models


class Detector(nn.Module):
    """A torchvision detector plus the label convention: labels 1..K in targets and in detections."""

    def __init__(self, model: nn.Module, name: str, backbone: str, num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.name, self.backbone_name, self.num_classes = name, backbone, num_classes
        self.label_offset = 0 if name == "faster_rcnn" else 1

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None) -> Any:
        if targets is not None and self.label_offset:
            targets = [{**t, "labels": t["labels"] - self.label_offset} for t in targets]
        out = self.model(images, targets)
        if not self.training and self.label_offset:
            out = [{**d, "labels": d["labels"] + self.label_offset} for d in out]
        return out


def build_detector(
    name: str,
    num_classes: int,
    backbone: str = "tiny",
    cls_loss: Any = None,
    reg_loss: Any = None,
    cls_weight: float = 1.0,
    reg_weight: float | None = None,
    image_size: int = 128,
    *,
    seed: int | None = None,
    weights: str | Path | None = None,
    fpn_channels: int | None = None,
) -> Detector:
    """Build `name` ("fcos", "retinanet", "faster_rcnn") for `num_classes` foreground classes.

    Losses are None/"default" (stock), a Loss-like object or text (see `loss_spec`); `reg_weight` None
    means the reference weight for the detector and loss. `seed` fixes the initial weights without
    changing the global RNG; `weights` loads a local state dict saved from `Detector.model`.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if image_size < 32 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    cls = resolve_loss(cls_loss, CLS_BRANCH[name])
    reg = resolve_loss(reg_loss, "reg")
    if reg_weight is None:
        reg_weight = _default_reg_weight(name, reg)
    builder = _BUILDERS[name]
    with _seeded(seed):
        model = builder(num_classes, backbone, image_size, fpn_channels, cls, reg, cls_weight, reg_weight)
    detector = Detector(model, name, backbone, num_classes)
    if weights is not None:
        load_weights(detector, weights)
    return detector


def _default_reg_weight(name: str, reg: Any) -> float:
    if name != "faster_rcnn":
        return ONE_STAGE_REG_WEIGHT
    return STOCK_REG_WEIGHT if reg is None else TWO_STAGE_REG_WEIGHT


def load_weights(detector: Detector, path: str | Path) -> None:
    """Load a state dict of `detector.model` from a local file (ValueError with the reason if unusable)."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, OS errors) for a bad file
        raise ValueError(f"cannot load weights {path}: {_first_line(err)}") from None
    if not isinstance(state, dict):
        raise ValueError(f"cannot load weights {path}: not a state dict")
    what = f"{detector.name} with backbone {detector.backbone_name} and {detector.num_classes} classes"
    try:
        keys = detector.model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ: another class count or width
        mismatch = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        raise ValueError(
            f"weights {path} do not fit a {what}: {(mismatch or [_first_line(err)])[0]}"
        ) from None
    if keys.missing_keys or keys.unexpected_keys:
        raise ValueError(
            f"weights {path} do not fit a {what}: {len(keys.missing_keys)} missing and "
            f"{len(keys.unexpected_keys)} unexpected parameters"
        )


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _seeded(seed: int | None):
    if seed is None:
        return nullcontext()
    return _fork_and_seed(seed)


class _fork_and_seed:
    """Seed torch's CPU RNG for the block and restore the caller's RNG state afterwards."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self) -> None:
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        self._fork.__exit__(*exc)


def _transform_args(image_size: int) -> dict[str, Any]:
    # Images arrive letterboxed to image_size, so the internal resize is the identity.
    return {"min_size": image_size, "max_size": image_size}


def _fcos(num_classes, backbone, image_size, fpn_channels, cls, reg, cls_w, reg_w) -> nn.Module:
    body = build_backbone(backbone, one_stage=True, fpn_channels=fpn_channels)
    head = LossFCOSHead(
        body.out_channels,
        1,
        num_classes,
        num_convs=TINY_FCOS_HEAD_CONVS if backbone == "tiny" else 4,
        cls_loss=cls,
        reg_loss=reg,
        cls_weight=cls_w,
        reg_weight=reg_w,
    )
    return FCOS(body, num_classes, head=head, score_thresh=SCORE_THRESH, **_transform_args(image_size))


def _retinanet(num_classes, backbone, image_size, fpn_channels, cls, reg, cls_w, reg_w) -> nn.Module:
    body = build_backbone(backbone, one_stage=True, fpn_channels=fpn_channels)
    # anchors of 2x the stride (torchvision's 4x suits 800 px images): small objects in small images
    sizes = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in (16, 32, 64, 128, 256))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = LossRetinaNetHead(
        body.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes,
        cls_loss=cls,
        reg_loss=reg,
        cls_weight=cls_w,
        reg_weight=reg_w,
    )
    return RetinaNet(
        body,
        num_classes,
        anchor_generator=anchors,
        head=head,
        score_thresh=SCORE_THRESH,
        **_transform_args(image_size),
    )


class LossFasterRCNN(FasterRCNN):
    """Faster R-CNN whose RoI head is a `LossRoIHeads` (the RPN keeps its stock loss)."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, roi_losses: dict[str, Any], **kwargs: Any):
        super().__init__(backbone, num_classes, **kwargs)
        stock = self.roi_heads
        self.roi_heads = LossRoIHeads(
            stock.box_roi_pool,
            stock.box_head,
            stock.box_predictor,
            stock.proposal_matcher.high_threshold,
            stock.proposal_matcher.low_threshold,
            stock.fg_bg_sampler.batch_size_per_image,
            stock.fg_bg_sampler.positive_fraction,
            stock.box_coder.weights,
            stock.score_thresh,
            stock.nms_thresh,
            stock.detections_per_img,
            **roi_losses,
        )


def _faster_rcnn(num_classes, backbone, image_size, fpn_channels, cls, reg, cls_w, reg_w) -> nn.Module:
    body = build_backbone(backbone, one_stage=False, fpn_channels=fpn_channels)
    levels = ["0", "1", "2"]
    anchors = AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4)
    pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=1)
    box_head = TwoMLPHead(body.out_channels * 7 * 7, 256)
    return LossFasterRCNN(
        body,
        None,
        roi_losses={"cls_loss": cls, "reg_loss": reg, "cls_weight": cls_w, "reg_weight": reg_w},
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=150,
        box_roi_pool=pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(256, num_classes + 1),
        box_batch_size_per_image=128,
        box_score_thresh=SCORE_THRESH,
        **_transform_args(image_size),
    )


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcos": _fcos,
    "retinanet": _retinanet,
    "faster_rcnn": _faster_rcnn,
}
