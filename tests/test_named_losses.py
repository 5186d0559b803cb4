"""Named losses against independent references: torch/torchvision functions and hand-written closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from autoloss import ExprError, Loss
from autoloss.spaces import NAMED


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _softmax_inputs(n=16, c=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g) * 3).requires_grad_(True)
    labels = torch.randint(0, c, (n,), generator=g)
    y = F.one_hot(labels, c).double()
    z = torch.rand(n, generator=g)
    return x, labels, y, z


def _sigmoid_inputs(n=16, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, k, generator=g) * 4).requires_grad_(True)
    y = (torch.rand(n, k, generator=g) < 0.3).double()
    q = y * torch.rand(n, 1, generator=g)
    return x, y, q


def _boxes(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(n, 4, generator=g) * 10
    pred = torch.cat(
        [torch.minimum(pred[:, :2], pred[:, 2:]), torch.maximum(pred[:, :2], pred[:, 2:]) + 0.5], 1
    )
    return pred.requires_grad_(True), target


def iue(pred, target, eps=1e-7):
    """Intersection, union and enclosing area of paired xyxy boxes (the reg branch's inputs)."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    union = area(pred) + area(target) - inter
    elt = torch.minimum(pred[:, :2], target[:, :2])
    erb = torch.maximum(pred[:, 2:], target[:, 2:])
    enclose = (erb - elt).prod(1)
    return inter, union + eps, enclose + eps


def _value_and_grad(fn, x):
    v = fn()
    (g,) = torch.autograd.grad(v.sum(), x)
    return v.detach(), g


def test_ce_equals_torch_cross_entropy():
    x, labels, y, z = _softmax_inputs()
    got = _value_and_grad(lambda: Loss.named("ce")(X=x, Y=y, Z=z), x)
    want = _value_and_grad(lambda: F.cross_entropy(x, labels, reduction="none"), x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_focal_times_alpha_equals_torchvision_sigmoid_focal_loss():
    x, y, q = _sigmoid_inputs()
    alpha_t = 0.25 * y + 0.75 * (1 - y)  # the detector applies alpha outside the expression, as the reference
    got = _value_and_grad(lambda: alpha_t * Loss.named("focal")(X=x, Q=q, PY=y, NY=1 - y), x)
    want = _value_and_grad(lambda: sigmoid_focal_loss(x, y, alpha=0.25, gamma=2, reduction="none"), x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_bce_equals_binary_cross_entropy_with_logits_even_when_saturated():
    x, y, q = _sigmoid_inputs()
    with torch.no_grad():
        x[0, 0], x[0, 1] = 40.0, -40.0  # exact, because the expression uses softplus, not log(sigmoid)
    got = _value_and_grad(lambda: Loss.named("bce")(X=x, Q=q, PY=y, NY=1 - y), x)
    want = _value_and_grad(lambda: F.binary_cross_entropy_with_logits(x, y, reduction="none"), x)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_giou_equals_torchvision_on_real_boxes():
    pred, target = _boxes()
    got = _value_and_grad(
        lambda: Loss.named("giou")(**dict(zip("IUE", iue(pred, target), strict=True))), pred
    )
    want = _value_and_grad(lambda: generalized_box_iou_loss(pred, target, reduction="none", eps=1e-7), pred)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_iou_equals_one_minus_box_iou():
    pred, target = _boxes()
    got = Loss.named("iou")(**dict(zip("IUE", iue(pred, target, eps=0.0), strict=True)))
    want = 1 - box_iou(pred, target).diagonal()
    torch.testing.assert_close(got, want)


def test_cse_a_cls_is_cross_entropy_weighted_by_one_plus_sin_iou():
    x, labels, y, z = _softmax_inputs()
    got = Loss.named("cse-a-cls")(X=x, Y=y, Z=z)  # Z given per RoI, broadcast over classes
    want = -(1 + torch.sin(z)) * torch.log_softmax(x, 1).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_cse_a_reg_closed_form():
    i, u, e = iue(*_boxes())
    want = (1 - i / u) + (1 - (i + 2) / e)
    torch.testing.assert_close(Loss.named("cse-a-reg")(I=i, U=u, E=e), want)


def test_cse_b_reg_closed_form():
    i, u, e = iue(*_boxes())
    # Read off the published tree by hand: -[(I + 1 - E)/(U + 5) + 1 + E] / [E - (U + I)/3].
    want = -((i + 1 - e) / (u + 5) + 1 + e) / (e - (u + i) / 3)
    torch.testing.assert_close(Loss.named("cse-b-reg")(I=i, U=u, E=e), want)


def test_cse_b_cls_closed_form():
    x, y, q = _sigmoid_inputs()
    ny = 1 - y
    p = torch.sigmoid(x)
    serf = lambda v: (torch.erf(math.sqrt(math.pi) * v / 4) + 1) / 2  # noqa: E731
    sgdf = lambda v: ((2 / math.pi) * 2 * torch.atan(torch.tanh(math.pi * v / 8)) + 1) / 2  # noqa: E731
    # -[Q (1 + serf(sig(1 - y))) log p + (sgdf(x) - Q)(p - Q) log(1 - p)], the published tree by hand.
    want = -(
        q * (1 + serf(torch.sigmoid(ny))) * torch.log(p + 1e-20)
        + (sgdf(x) - q) * (p - q) * torch.log(1 - p + 1e-20)
    )
    torch.testing.assert_close(Loss.named("cse-b-cls")(X=x, Q=q, PY=y, NY=ny), want)


@pytest.mark.parametrize("name", sorted(NAMED))
def test_named_losses_round_trip_through_json_and_text(name):
    loss = Loss.named(name)
    assert Loss.from_json(loss.to_json()) == loss
    assert Loss.parse(loss.text, loss.branch) == loss
    assert Loss.parse(loss.text) == loss  # the branch is inferred from the inputs
    assert loss.latex() and loss.infix()


@pytest.mark.parametrize("name", sorted(NAMED))
def test_empty_batch_gives_empty_output_with_a_gradient_path(name):
    loss = Loss.named(name)
    if loss.branch == "reg":
        i = torch.zeros(0, requires_grad=True)
        out = loss(I=i, U=torch.ones(0), E=torch.ones(0))
    else:
        i = torch.zeros(0, 3, requires_grad=True)
        extra = (
            {"Y": torch.zeros(0, 3), "Z": torch.zeros(0)}
            if loss.branch == "cls-softmax"
            else {"Q": torch.zeros(0, 3), "PY": torch.zeros(0, 3), "NY": torch.zeros(0, 3)}
        )
        out = loss(X=i, **extra)
    assert out.shape[0] == 0
    out.sum().backward()
    assert i.grad is not None


def test_output_shapes_per_branch():
    x, _, y, z = _softmax_inputs(n=7, c=3)
    assert Loss.named("ce")(X=x, Y=y, Z=z).shape == (7,)
    xs, ys, qs = _sigmoid_inputs(n=7, k=3)
    assert Loss.named("focal")(X=xs, Q=qs, PY=ys, NY=1 - ys).shape == (7, 3)
    assert Loss.parse("Sig(X)", "cls-sigmoid")(X=xs, Q=qs, PY=ys, NY=1 - ys).shape == (7, 3)
    # A loss that reads no input still returns one value per element.
    assert Loss.parse("Add(1,2)", "reg")(I=torch.ones(4), U=torch.ones(4), E=torch.ones(4)).shape == (4,)


def test_bad_branch_and_names_are_refused_clearly():
    with pytest.raises(ExprError, match="unknown named loss 'nope'"):
        Loss.named("nope")
    with pytest.raises(ExprError, match="unknown branch 'boxes'"):
        Loss.parse("I", branch="boxes")
    with pytest.raises(ExprError, match="giou is a reg loss, not cls-softmax"):
        Loss.resolve("giou", "cls-softmax")
    with pytest.raises(ExprError, match="operator 'Dot' is not allowed for branch reg"):
        Loss.parse("Dot(I,U)", "reg")
    with pytest.raises(ExprError, match="must reduce over classes with Dot"):
        Loss.parse("Log(Softmax(X))", "cls-softmax")
    with pytest.raises(ExprError, match="Softmax needs a per-class value"):
        Loss.parse("Dot(Y,Softmax(1))", "cls-softmax")
    with pytest.raises(ExprError, match="mixes a per-class value with a per-RoI value"):
        Loss.parse("Add(X,Dot(X,Y))", "cls-softmax")
    with pytest.raises(TypeError, match="missing U"):
        Loss.named("giou")(I=torch.ones(2), E=torch.ones(2))
