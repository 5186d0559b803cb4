"""The loss seam: routed stock losses equal torchvision's own, degenerate batches, input construction."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import FCOS, RetinaNet
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import generalized_box_iou_loss

from autoloss.detection.detectors import TINY_FCOS_HEAD_CONVS, build_detector
from autoloss.detection.loader import batch_of
from autoloss.detection.loss_inputs import (
    LossOutputError,
    apply_loss,
    box_terms,
    paired_iou,
    reg_inputs,
    softmax_cls_inputs,
    weighted_sum,
)
from autoloss.detection.loss_spec import LossSpecError, resolve_loss
from autoloss.detection.shapes import generate_shapes
from test_detection_doubles import BCE, CE, FOCAL, GIOU, IOU, Double

K = 5


def _batch(n: int = 4, size: int = 128, empty: bool = False):
    data = generate_shapes("train", n, size, seed=1)
    images, targets = batch_of(data, list(range(n)))
    if empty:
        targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)} for _ in targets]
    return images, targets


def _shifted(targets):
    # torchvision's one-stage models index classes from 0; our Detector shifts labels 1..K down by one
    return [{**t, "labels": t["labels"] - 1} for t in targets]


def _stock_one_stage(detector):
    """The same network as `detector`, with torchvision's stock head class and identical weights."""
    inner = detector.model
    if detector.name == "fcos":
        head = FCOSHead(inner.backbone.out_channels, 1, K, num_convs=TINY_FCOS_HEAD_CONVS)
        stock = FCOS(
            inner.backbone, K, head=head, anchor_generator=inner.anchor_generator, min_size=128, max_size=128
        )
    else:
        head = RetinaNetHead(
            inner.backbone.out_channels, inner.anchor_generator.num_anchors_per_location()[0], K
        )
        head.regression_head._loss_type = "giou"  # the seam's documented default (torchvision's v2 choice)
        stock = RetinaNet(
            inner.backbone, K, head=head, anchor_generator=inner.anchor_generator, min_size=128, max_size=128
        )
    stock.head.load_state_dict(inner.head.state_dict())
    return stock.train()


def _named(name: str):
    from autoloss.loss import Loss

    return Loss.named(name)


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
@pytest.mark.parametrize("routed", ["stock-path", "doubles", "named"])
def test_one_stage_seam_equals_torchvision_stock_loss(name, routed):
    losses = {
        "stock-path": {},
        "doubles": {"cls_loss": FOCAL, "reg_loss": GIOU},
        # the expression layer's compiled focal and GIoU, as the search will route them
        "named": {"cls_loss": _named("focal"), "reg_loss": _named("giou")},
    }[routed]
    detector = build_detector(name, K, seed=0, **losses).train()
    stock = _stock_one_stage(detector)
    images, targets = _batch()
    ours = detector(images, targets)
    theirs = stock(images, _shifted(targets))
    assert ours.keys() == theirs.keys()
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)
    assert ours["classification"] > 0 and ours["bbox_regression"] > 0


def _rcnn_parts(detector, images, targets):
    inner = detector.model
    image_list, targets_t = inner.transform(images, targets)
    features = inner.backbone(image_list.tensors)
    proposals, _ = inner.rpn(image_list, features, targets_t)
    return features, proposals, image_list.image_sizes, targets_t


def _stock_roi_heads(seam):
    return RoIHeads(
        seam.box_roi_pool,
        seam.box_head,
        seam.box_predictor,
        seam.proposal_matcher.high_threshold,
        seam.proposal_matcher.low_threshold,
        seam.fg_bg_sampler.batch_size_per_image,
        seam.fg_bg_sampler.positive_fraction,
        seam.box_coder.weights,
        seam.score_thresh,
        seam.nms_thresh,
        seam.detections_per_img,
    )


@pytest.mark.parametrize("cls_loss", [None, CE, "ce"], ids=["stock-path", "double-ce", "named-ce"])
def test_two_stage_seam_equals_torchvision_stock_loss(cls_loss):
    detector = build_detector("faster_rcnn", K, seed=0, cls_loss=cls_loss).train()
    parts = _rcnn_parts(detector, *_batch())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)  # the RoI sampler draws from torch's RNG: same draws for both heads
        _, ours = detector.model.roi_heads(*parts)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        _, theirs = _stock_roi_heads(detector.model.roi_heads).train()(*parts)
    for key in ("loss_classifier", "loss_box_reg"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-6)


def test_two_stage_routed_reg_is_weighted_giou_of_decoded_boxes_over_sampled_rois():
    detector = build_detector("faster_rcnn", K, seed=0, reg_loss=_named("giou"))
    heads = detector.model.roi_heads
    assert heads.reg_weight == 10.0  # the reference's two-stage weight for a decoded-box loss
    # three RoIs of one image: two foreground (labels 2 and 4) and one background
    proposals = [torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 100], [0, 0, 20, 20]])]
    gt = {"boxes": torch.tensor([[12.0, 8, 48, 52], [58, 62, 95, 98]]), "labels": torch.tensor([2, 4])}
    labels = [torch.tensor([2, 4, 0])]
    matched = [torch.tensor([0, 1, 0])]
    logits = torch.randn(3, K + 1, generator=torch.Generator().manual_seed(0))
    deltas = torch.randn(3, 4 * (K + 1), generator=torch.Generator().manual_seed(1), requires_grad=True) * 0.1
    reg_targets = heads.box_coder.encode([gt["boxes"][matched[0]]], proposals)
    losses = heads.box_losses(logits, deltas, proposals, matched, labels, list(reg_targets), [gt])
    fg_deltas = deltas.reshape(3, K + 1, 4)[[0, 1], [2, 4]]
    decoded = heads.box_coder.decode_single(fg_deltas, proposals[0][:2])
    expected = 10.0 * generalized_box_iou_loss(decoded, gt["boxes"], reduction="sum") / 3
    torch.testing.assert_close(losses["loss_box_reg"], expected)


@pytest.mark.parametrize("name", ["fcos", "retinanet", "faster_rcnn"])
def test_batch_without_foreground_gives_finite_zero_reg_loss_with_gradient(name):
    cls = CE if name == "faster_rcnn" else FOCAL
    detector = build_detector(name, K, seed=0, cls_loss=cls, reg_loss=GIOU).train()
    losses = detector(*_batch(empty=True))
    reg_key = "loss_box_reg" if name == "faster_rcnn" else "bbox_regression"
    assert losses[reg_key].item() == 0.0
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()  # a gradient path exists (the classification term pushes everything to background)
    grads = [p.grad for p in detector.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_sigmoid_seam_uses_iou_of_positives_at_their_class_only():
    seen = {}

    def spy(X, Q, PY, NY):
        seen.update(X=X, Q=Q, PY=PY, NY=NY)
        return BCE.fn(X, Q, PY, NY)

    detector = build_detector("fcos", K, seed=0, cls_loss=Double("cls-sigmoid", "spy", spy)).train()
    detector(*_batch())
    q, py = seen["Q"], seen["PY"]
    assert seen["X"].shape[1] == K and py.sum() > 0
    assert (q[py == 0] == 0).all()  # zero off the GT class and on negatives
    assert (q[py == 1] >= 0).all() and (q[py == 1] <= 1).all() and q[py == 1].max() > 0
    assert not q.requires_grad and torch.equal(seen["NY"], 1 - py)


def test_softmax_inputs_put_iou_on_foreground_and_one_on_background():
    logits = torch.zeros(3, 4)
    inputs = softmax_cls_inputs(logits, torch.tensor([0, 2, 3]), torch.tensor([0.3, 0.6, 0.9]))
    assert inputs["Z"].shape == (3, 4)
    torch.testing.assert_close(inputs["Z"][:, 0], torch.tensor([1.0, 0.6, 0.9]))
    assert torch.equal(inputs["Y"].argmax(1), torch.tensor([0, 2, 3]))


def test_box_terms_hand_computed():
    # pred (0,0,2,2), target (1,1,3,4): inter 1x1=1, union 4+6-1=9, enclosing 3x4=12
    inter, union, enclosing = box_terms(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 4]]))
    assert (inter.item(), union.item(), enclosing.item()) == (1.0, 9.0, 12.0)
    terms = reg_inputs(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 4]]))
    assert terms["U"].item() == pytest.approx(9.0 + 1e-7) and terms["E"].item() == pytest.approx(12.0 + 1e-7)
    assert paired_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 1, 3, 4]])).item() == pytest.approx(
        1 / 9
    )


def test_per_box_weight_multiplies_each_box_and_is_not_averaged():
    values = torch.tensor([1.0, 2.0, 3.0])
    # per-box: 1*0 + 2*1 + 3*2 = 8; the reference's mean-over-last-axis would give (0+1+2)/3 * 6 = 6
    assert weighted_sum(values, torch.tensor([0.0, 1.0, 2.0])).item() == 8.0
    with pytest.raises(LossOutputError, match="weight shape"):
        weighted_sum(values, torch.ones(2))


def test_apply_loss_broadcasts_constants_and_rejects_wrong_shapes():
    inputs = {"I": torch.ones(4), "U": torch.ones(4), "E": torch.ones(4)}
    assert (
        apply_loss(Double("reg", "const", lambda **kw: torch.tensor(2.0)), inputs, (4,)).tolist() == [2.0] * 4
    )
    with pytest.raises(LossOutputError, match=r"shape \(3,\)"):
        apply_loss(Double("reg", "bad", lambda **kw: torch.ones(3)), inputs, (4,))


def test_resolve_loss_defaults_and_branch_check():
    assert resolve_loss(None, "reg") is None and resolve_loss("default", "reg") is None
    assert resolve_loss(IOU, "reg") is IOU
    with pytest.raises(LossSpecError, match="is for branch reg"):
        resolve_loss(GIOU, "cls-sigmoid")
    with pytest.raises(LossSpecError, match="needs"):
        resolve_loss(42, "reg")
