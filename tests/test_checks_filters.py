"""The filters on the named losses (all must pass) and on losses that are bad for a known reason."""

from __future__ import annotations

import json

import pytest
import torch

from autoloss import Loss
from autoloss.checks import CheckConfig, screen
from autoloss.checks.mos import coco_style_ap, simulate
from autoloss.checks.mos_data import ClsProblem
from autoloss.checks.probes import box_terms
from autoloss.spaces.named import NAMED


@pytest.mark.parametrize("name", list(NAMED))
def test_named_losses_pass_every_filter(name):
    result = screen(Loss.named(name))
    assert result.passed, (result.stage, result.reason)
    assert result.stage == "passed"
    assert [v.name for v in result.verdicts] == ["validity", "dedup", "cpv", "mos"]
    assert result.mos_score is not None and 0.0 < result.mos_score <= 1.0
    json.dumps(result.to_dict())  # plain data all the way down


@pytest.mark.parametrize(
    ("text", "branch", "stage", "reason"),
    [
        # Well-shaped but reads no label: it cannot know what to learn.
        ("Neg(Dot(X,X))", "cls-softmax", "validity", "blind to the label: reads none of Y"),
        ("Mul(X,X)", "cls-sigmoid", "validity", "blind to the label"),
        (
            "Add(Dot(Y,Y),Dot(X,X))",
            "cls-softmax",
            "validity",
            "changing the label never changes the gradient",
        ),
        ("Neg(Div(I,I))", "reg", "validity", "blind to the label: reads none of E, U"),
        # Constants: no gradient to follow.
        ("Dot(Y,Sub(X,X))", "cls-softmax", "validity", "constant in the prediction"),
        ("Add(1,2)", "reg", "validity", "does not read the prediction"),
        # log of a negative probability: NaN on every row.
        ("Neg(Dot(Y,Log(Neg(Softmax(X)))))", "cls-softmax", "validity", "NaN value"),
        # sqrt(IoU) has an infinite slope at IoU = 0: NaN gradient for disjoint boxes.
        ("Sub(1,Sqrt(Div(I,U)))", "reg", "validity", "NaN gradient"),
        # Inverted cross-entropy rewards wrong predictions.
        ("Dot(Y,Log(Softmax(X)))", "cls-softmax", "cpv", "not a descent direction"),
        ("Sub(Softplus(Neg(X)),Mul(NY,Softplus(X)))", "cls-sigmoid", "cpv", "not a descent direction"),
        # IoU itself grows as boxes improve.
        ("Div(I,U)", "reg", "cpv", "not a descent direction"),
        # -x_y: monotone, but unbounded; its gradient never fades (a gap of CPV's first version).
        ("Neg(Dot(Y,X))", "cls-softmax", "cpv", "unbounded: the gradient in x_c does not fade"),
        ("Sub(Mul(NY,X),Mul(PY,X))", "cls-sigmoid", "cpv", "unbounded"),
        # Raw pixel²: not scale-free (another gap of CPV's first version).
        ("Sub(U,I)", "reg", "cpv", "not scale-free"),
        # Only positives are trained: negatives are never pushed down.
        ("Mul(PY,Softplus(Neg(X)))", "cls-sigmoid", "cpv", "negative"),
        # Descends, but trains a far worse classifier than CE: MOS's job.
        ("Neg(Dot(Y,Softmax(X)))", "cls-softmax", "mos", "is below 0.85 x ce's"),
    ],
)
def test_bad_losses_are_rejected_for_the_right_reason(text, branch, stage, reason):
    result = screen(Loss.parse(text, branch))
    assert not result.passed
    assert result.stage == stage, result.reason
    assert reason in result.reason
    assert result.verdicts[-1].name == stage and not result.verdicts[-1].passed


def test_published_iou_aware_loss_keeps_its_minimum_below_p_1():
    # cse-b-cls is smallest below p = 1 for soft positives; CPV allows that and reports where.
    cpv = screen(Loss.named("cse-b-cls"), mos=False).verdicts[-1]
    assert cpv.passed and "Q=0.25: x*=0" in cpv.reason and "Q=1: x*=7" in cpv.reason


def test_iou_loss_passes_though_disjoint_boxes_get_no_gradient():
    cpv = screen(Loss.named("iou"), mos=False).verdicts[-1]
    assert cpv.passed and "disjoint boxes get no gradient" in cpv.reason
    cpv = screen(Loss.named("giou"), mos=False).verdicts[-1]
    assert "moves 100% of them toward the target" in cpv.reason


def test_mos_is_deterministic_and_leaves_the_global_rng_alone():
    config = CheckConfig()
    state = torch.get_rng_state()
    for name in ("cse-a-cls", "cse-b-cls", "cse-b-reg"):
        loss = Loss.named(name)
        assert simulate(loss, config.mos) == simulate(Loss.named(name), config.mos)
    assert torch.equal(state, torch.get_rng_state())


def test_mos_ranks_regression_losses():
    # GIoU moves disjoint starts, IoU cannot: the reg simulation must see the difference.
    config = CheckConfig().mos
    giou, _ = simulate(Loss.named("giou"), config)
    iou, _ = simulate(Loss.named("iou"), config)
    assert giou > iou + 0.05


def test_box_terms_by_hand():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 3.0, 3.0]])
    i, u, e = box_terms(pred, target)
    # Overlap 1x1; union 4 + 4 - 1; enclosing 3x3. Disjoint pair: no overlap, union 2, enclosing 3x3.
    assert torch.allclose(i, torch.tensor([1.0, 0.0]))
    assert torch.allclose(u, torch.tensor([7.0, 2.0]))
    assert torch.allclose(e, torch.tensor([9.0, 9.0]))


def test_coco_style_ap_by_hand():
    # Two class-1 samples (qualities 0.9 and 0.6) and one background; scores rank them 0.9, bg, 0.6.
    empty = torch.empty(0)
    p = ClsProblem(
        empty, empty, empty, torch.empty(3, 1), torch.tensor([1, 0, 1]), torch.tensor([0.9, 1.0, 0.6]), ()
    )
    scores = torch.tensor([[0.9], [0.5], [0.1]])
    ap = coco_style_ap(scores, p)
    # t <= 0.6 (3 thresholds): hits at ranks 1 and 3 -> (1 + 2/3) / 2; 0.6 < t <= 0.9 (6): rank 1 -> 1/2;
    # t = 0.95: no hit -> 0. Mean over the 10 thresholds.
    expected = (3 * (1 + 2 / 3) / 2 + 6 * 0.5 + 0.0) / 10
    assert ap == pytest.approx(expected, rel=1e-6)


def test_mos_box_inputs_equal_box_terms_on_decoded_boxes():
    # The reg simulation computes I/U/E with x and y together; it must equal the reference formula.
    from autoloss.checks.config import MOSConfig
    from autoloss.checks.mos import _box_inputs
    from autoloss.checks.mos_data import reg_problem

    prob = reg_problem(MOSConfig())
    deltas = 0.3 * torch.randn(prob.anchors.shape, generator=torch.Generator().manual_seed(1))
    a = prob.anchors
    cx, cy = a[:, 0] + deltas[:, 0] * a[:, 2], a[:, 1] + deltas[:, 1] * a[:, 3]
    w, h = a[:, 2] * torch.exp(deltas[:, 2]), a[:, 3] * torch.exp(deltas[:, 3])
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)
    for ours, reference in zip(_box_inputs(prob, deltas), box_terms(boxes, prob.targets), strict=True):
        assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-3)
    # Some starts are disjoint (no overlap), as the config asks.
    i, _, _ = _box_inputs(prob, torch.zeros_like(deltas))
    assert int((i == 0).sum()) >= round(MOSConfig().reg_disjoint * len(i))


@pytest.mark.parametrize(
    ("text", "branch", "where"),
    [
        ("Neg(Dot(Y,Log(Neg(Softmax(X)))))", "cls-softmax", "at training step 0"),
        ("Sqrt(Sub(Div(I,U),1))", "reg", "at optimisation step 0"),
    ],
)
def test_mos_rejects_non_finite_training(text, branch, where):
    from autoloss.checks.mos import mos

    passed, reason, score = mos(Loss.parse(text, branch), CheckConfig())
    assert not passed and score is None
    assert reason.startswith("non-finite loss (nan)") and where in reason
