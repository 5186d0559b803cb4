"""`build_detector`: torchvision FCOS, RetinaNet and Faster R-CNN with a loss seam.

Backbones train from scratch by default; `pretrained` / `backbone_weights` start a ResNet from ImageNet
weights (see `backbones`), and `weights` loads a whole detector's local state dict. Anchor and RoI
settings follow the input scale (`geometry`, see `GEOMETRIES`): "tiny" is trimmed for small images on CPU
(RoIAlign's backward dominates a Faster R-CNN step on CPU), "coco" is torchvision's own defaults for COCO-size
images. Every detector takes dataset labels 1..K; the one-stage ones see 0..K-1 inside, so their sigmoid
heads have exactly K classes and a searched cls-sigmoid loss sees X of shape [N,K].

Input images are float [0,1]; each detector's GeneralizedRCNNTransform normalises them with torchvision's
ImageNet mean/std (its default in all three), which ImageNet-pretrained backbones expect.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from autoloss.detection.backbones import build_backbone
from autoloss.detection.frame_transform import skip_identity_resize
from autoloss.detection.loss_spec import resolve_loss
from autoloss.detection.one_stage import LossFCOSHead, LossRetinaNetHead
from autoloss.detection.two_stage import LossRoIHeads
from autoloss.spaces.branches import DETECTOR_CLS_BRANCH, DETECTOR_REG_WEIGHT

DETECTORS = ("fcos", "retinanet", "faster_rcnn")
CLS_BRANCH = DETECTOR_CLS_BRANCH  # the search spaces' table, under the detection layer's name
# A searched reg loss is weighted by DETECTOR_REG_WEIGHT; Faster R-CNN's stock smooth-L1 on deltas keeps
# torchvision's weight 1.
STOCK_REG_WEIGHT = 1.0
# The tiny FCOS head has 2 convs per branch instead of 4: the head is most of a tiny step's time on CPU.
TINY_FCOS_HEAD_CONVS = 2
SCORE_THRESH = 0.05  # COCO-eval convention; FCOS's own 0.2 would cut recall of briefly trained models
MIN_TRANSFORM_SIZE = 32  # the backbones' coarsest FPN stride before the extra levels


@dataclass(frozen=True)
class Geometry:
    """Anchor and RoI settings of RetinaNet and Faster R-CNN for one input scale.

    FCOS has none: torchvision's defaults (one anchor per location, the size of its stride, and size
    ranges per level) scale with the strides and serve both. Aspect ratios are (0.5, 1, 2) everywhere.
    """

    name: str
    # per level P3..P7, three octave scales 2**0, 2**(1/3), 2**(2/3) of the base size
    retinanet_anchor_sizes: tuple[tuple[int, ...], ...]
    # Faster R-CNN's FPN levels: 8 is P3-P5 + pool, 4 is P2-P5 + pool (torchvision's layout)
    rcnn_finest_stride: int
    rcnn_anchor_sizes: tuple[tuple[int, ...], ...]  # one size per level, the pool level included
    rpn_pre_nms_top_n: tuple[int, int]  # per level, (train, test)
    rpn_post_nms_top_n: tuple[int, int]  # per image, (train, test)
    box_batch_size_per_image: int  # RoIs sampled per image for the box head's loss
    box_head_width: int  # TwoMLPHead representation size
    sampling_ratio: int  # RoIAlign samples per bin side


GEOMETRIES = {
    # Small images (128 px): anchors of 2x the stride, not torchvision's 4x (small objects), rounded;
    # Faster R-CNN trimmed for CPU, where RoIAlign backward dominates a step.
    "tiny": Geometry(
        name="tiny",
        retinanet_anchor_sizes=((16, 20, 25), (32, 40, 51), (64, 81, 102), (128, 161, 203), (256, 323, 406)),
        rcnn_finest_stride=8,
        rcnn_anchor_sizes=((16,), (32,), (64,), (128,)),
        rpn_pre_nms_top_n=(600, 300),
        rpn_post_nms_top_n=(300, 150),
        box_batch_size_per_image=128,
        box_head_width=256,
        sampling_ratio=1,
    ),
    # torchvision's retinanet_resnet50_fpn / fasterrcnn_resnet50_fpn defaults (800-1333 px images);
    # RetinaNet's octave sizes truncated with int() as torchvision does.
    "coco": Geometry(
        name="coco",
        retinanet_anchor_sizes=(
            (32, 40, 50),
            (64, 80, 101),
            (128, 161, 203),
            (256, 322, 406),
            (512, 645, 812),
        ),
        rcnn_finest_stride=4,
        rcnn_anchor_sizes=((32,), (64,), (128,), (256,), (512,)),
        rpn_pre_nms_top_n=(2000, 1000),
        rpn_post_nms_top_n=(2000, 1000),
        box_batch_size_per_image=512,
        box_head_width=1024,
        sampling_ratio=2,
    ),
}
GEOMETRY_CHOICES = ("auto", *GEOMETRIES)
# "auto" picks "coco" from this transform min size on: the tiny anchors stop at 128-406 px there
COCO_GEOMETRY_MIN_SIZE = 512
ASPECT_RATIOS = (0.5, 1.0, 2.0)


def resolve_geometry(geometry: str, min_size: int) -> Geometry:
    """The Geometry named `geometry`; "auto" is "coco" for a transform min size >= 512, else "tiny"."""
    if geometry not in GEOMETRY_CHOICES:
        raise ValueError(f"unknown geometry {geometry!r}; expected one of {', '.join(GEOMETRY_CHOICES)}")
    if geometry == "auto":
        geometry = "coco" if min_size >= COCO_GEOMETRY_MIN_SIZE else "tiny"
    return GEOMETRIES[geometry]


class Detector(nn.Module):
    """A torchvision detector plus the label convention: labels 1..K in targets and in detections."""

    def __init__(
        self, model: nn.Module, name: str, backbone: str, num_classes: int, geometry: str = "tiny"
    ) -> None:
        super().__init__()
        self.model = skip_identity_resize(model)  # every detector, built-in or a user's
        self.name, self.backbone_name, self.num_classes = name, backbone, num_classes
        self.geometry = geometry
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
    pretrained: str | None = None,
    backbone_weights: str | Path | None = None,
    trainable_layers: int | None = None,
    geometry: str = "auto",
    min_size: int | None = None,
    max_size: int | None = None,
) -> Detector:
    """Build `name` ("fcos", "retinanet", "faster_rcnn") for `num_classes` foreground classes.

    Losses are None/"default" (stock), a Loss-like object or text (see `loss_spec`); `reg_weight` None
    means the reference weight for the detector and loss. `seed` fixes the initial weights without
    changing the global RNG; `weights` loads a local state dict saved from `Detector.model`.

    `pretrained` (a torchvision ImageNet weight name such as "DEFAULT") or `backbone_weights` (a local
    ResNet state dict) initialise a resnet18/resnet50 backbone, with FrozenBatchNorm2d and the last
    `trainable_layers` stages trained (default 3), as torchvision's detection builders do.

    `min_size`/`max_size` are the transform's resize bounds; None means `image_size`, so square
    letterboxed inputs pass unresized. Otherwise images are resized keeping their aspect (short side
    `min_size` unless the long side would pass `max_size`), batches padded to a multiple of 32, and
    detections come back in each input image's own frame. `geometry` ("auto", "tiny", "coco") picks the
    anchor/RoI settings of `GEOMETRIES`; "auto" is "coco" from a min size of 512 on.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; expected one of {', '.join(DETECTORS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if image_size < 32 or image_size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
    transform = _transform_args(image_size, min_size, max_size)
    geo = resolve_geometry(geometry, transform["min_size"])
    cls = resolve_loss(cls_loss, CLS_BRANCH[name])
    reg = resolve_loss(reg_loss, "reg")
    if reg_weight is None:
        reg_weight = _default_reg_weight(name, reg)
    losses = {"cls_loss": cls, "reg_loss": reg, "cls_weight": cls_weight, "reg_weight": reg_weight}
    with _seeded(seed):
        # the backbone first, then the head: the RNG order of the weights' initialisation is part of `seed`
        body = build_backbone(
            backbone,
            one_stage=name != "faster_rcnn",
            fpn_channels=fpn_channels,
            pretrained=pretrained,
            weights_file=backbone_weights,
            trainable_layers=trainable_layers,
            finest_stride=8 if name != "faster_rcnn" else geo.rcnn_finest_stride,
        )
        model = _BUILDERS[name](body, num_classes, backbone, geo, transform, losses)
    detector = Detector(model, name, backbone, num_classes, geo.name)
    if weights is not None:
        load_weights(detector, weights)
    return detector


def _default_reg_weight(name: str, reg: Any) -> float:
    return STOCK_REG_WEIGHT if reg is None and name == "faster_rcnn" else DETECTOR_REG_WEIGHT[name]


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
    # A backbone trained with frozen BatchNorm (ImageNet-initialised) has no batch counters; rebuilt with
    # plain BatchNorm for evaluation it computes the same (eval mode uses the stored statistics).
    missing = [k for k in keys.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = keys.unexpected_keys
    if missing or unexpected:
        raise ValueError(
            f"weights {path} do not fit a {what}: {len(missing)} missing and "
            f"{len(unexpected)} unexpected parameters"
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


def _transform_args(image_size: int, min_size: int | None, max_size: int | None) -> dict[str, int]:
    """GeneralizedRCNNTransform's resize bounds (it also pads batches to a multiple of 32)."""
    # Unset, both are image_size: images arrive letterboxed to it, so the resize is the identity.
    min_size = image_size if min_size is None else min_size
    max_size = image_size if max_size is None else max_size
    for label, value in (("min_size", min_size), ("max_size", max_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < MIN_TRANSFORM_SIZE:
            raise ValueError(f"{label} must be an integer >= {MIN_TRANSFORM_SIZE}, got {value!r}")
    if max_size < min_size:
        raise ValueError(f"max_size ({max_size}) must be >= min_size ({min_size}); unset, each is image_size")
    return {"min_size": min_size, "max_size": max_size}


def _fcos(body, num_classes, backbone, geo, transform, losses) -> nn.Module:
    head = LossFCOSHead(
        body.out_channels,
        1,
        num_classes,
        num_convs=TINY_FCOS_HEAD_CONVS if backbone == "tiny" else 4,
        **losses,
    )
    return FCOS(body, num_classes, head=head, score_thresh=SCORE_THRESH, **transform)


def _retinanet(body, num_classes, backbone, geo, transform, losses) -> nn.Module:
    sizes = geo.retinanet_anchor_sizes
    anchors = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
    head = LossRetinaNetHead(body.out_channels, anchors.num_anchors_per_location()[0], num_classes, **losses)
    return RetinaNet(
        body, num_classes, anchor_generator=anchors, head=head, score_thresh=SCORE_THRESH, **transform
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


def _faster_rcnn(body, num_classes, backbone, geo, transform, losses) -> nn.Module:
    sizes = geo.rcnn_anchor_sizes
    anchors = AnchorGenerator(sizes, (ASPECT_RATIOS,) * len(sizes))
    levels = [str(i) for i in range(len(sizes) - 1)]  # the FPN levels; RoIs are not pooled from "pool"
    pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=geo.sampling_ratio)
    box_head = TwoMLPHead(body.out_channels * 7 * 7, geo.box_head_width)
    return LossFasterRCNN(
        body,
        None,
        roi_losses=losses,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=geo.rpn_pre_nms_top_n[0],
        rpn_post_nms_top_n_train=geo.rpn_post_nms_top_n[0],
        rpn_pre_nms_top_n_test=geo.rpn_pre_nms_top_n[1],
        rpn_post_nms_top_n_test=geo.rpn_post_nms_top_n[1],
        box_roi_pool=pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(geo.box_head_width, num_classes + 1),
        box_batch_size_per_image=geo.box_batch_size_per_image,
        box_score_thresh=SCORE_THRESH,
        **transform,
    )


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcos": _fcos,
    "retinanet": _retinanet,
    "faster_rcnn": _faster_rcnn,
}
