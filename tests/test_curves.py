"""Loss curves (`autoloss show --plot`, `autoloss.plot_loss_curves`): the numbers against float64 closed
forms written here, the figure a readable PNG, and clear errors for what cannot be drawn.

Closed forms are evaluated on the very inputs the curves use (the float32 logits and box offsets, widened
to float64), so the only differences left are float32 arithmetic: relative 1e-4 on values, and an
absolute 1e-6 (classification) or 1e-7 (boxes, gradients of order 1/64 px) where a value is near 0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import autoloss
from autoloss.cli import cli
from autoloss.loss import Loss
from autoloss.report.curves import BOX, CurveError, box_families, loss_curves, probability_logits

ALPHA = 0.25  # focal's alpha: the one-stage heads weigh positives by it, negatives by 1 - alpha
POINTS = 9


def named(*names: str) -> dict[str, Loss]:
    return {n: Loss.named(n) for n in names}


def close(got: np.ndarray, want: np.ndarray, atol: float) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)


@pytest.fixture(scope="module")
def sigmoid():
    curves = loss_curves(named("focal", "bce", "cse-b-cls"), points=POINTS)
    p = 1 / (1 + np.exp(-probability_logits(POINTS).double().numpy()))
    return curves, p


def test_sigmoid_cases_are_positives_at_each_q_then_a_negative(sigmoid):
    curves, p = sigmoid
    assert [c.title for c in curves.cases] == ["positive, Q = 1", "positive, Q = 0.5", "negative"]
    assert all(np.allclose(c.x, p, rtol=1e-6) for c in curves.cases)  # x is sigmoid(logit)
    assert "α_t" in curves.note


def test_focal_with_alpha_matches_its_closed_form(sigmoid):
    curves, p = sigmoid
    positive, negative = curves.cases[0], curves.cases[-1]
    # positive: alpha (1-p)^2 (-log p); d/dx = alpha (1-p)^2 (2 p log p - (1-p))
    close(positive.values["focal"], ALPHA * (1 - p) ** 2 * -np.log(p), 1e-6)
    close(positive.grads["focal"], ALPHA * (1 - p) ** 2 * (2 * p * np.log(p) - (1 - p)), 1e-6)
    # negative: (1-alpha) p^2 (-log(1-p)); d/dx = (1-alpha) (2 p^2 (1-p) (-log(1-p)) + p^3)
    close(negative.values["focal"], (1 - ALPHA) * p**2 * -np.log1p(-p), 1e-6)
    close(negative.grads["focal"], (1 - ALPHA) * (2 * p**2 * (1 - p) * -np.log1p(-p) + p**3), 1e-6)


def test_focal_through_the_seam_is_torchvisions_focal_loss(sigmoid):
    """The named focal has no alpha; the heads' alpha_t makes it the stock loss (alpha 0.25, gamma 2)."""
    from torchvision.ops import sigmoid_focal_loss

    curves, _ = sigmoid
    logits = probability_logits(POINTS)
    for case, target in ((curves.cases[0], 1.0), (curves.cases[-1], 0.0)):
        stock = sigmoid_focal_loss(logits, torch.full_like(logits, target), reduction="none")
        close(case.values["focal"], stock.double().numpy(), 1e-7)


def test_bce_with_alpha_matches_its_closed_form(sigmoid):
    curves, p = sigmoid
    positive, negative = curves.cases[0], curves.cases[-1]
    close(positive.values["bce"], ALPHA * -np.log(p), 1e-6)
    close(positive.grads["bce"], ALPHA * (p - 1), 1e-6)  # d(-log sigmoid(x))/dx = p - 1
    close(negative.values["bce"], (1 - ALPHA) * -np.log1p(-p), 1e-6)
    close(negative.grads["bce"], (1 - ALPHA) * p, 1e-6)


def test_q_reaches_losses_that_read_it_and_no_others(sigmoid):
    curves, _ = sigmoid
    q1, q_half = curves.cases[0], curves.cases[1]
    np.testing.assert_array_equal(q1.values["focal"], q_half.values["focal"])
    assert not np.allclose(q1.values["cse-b-cls"], q_half.values["cse-b-cls"])
    # CSE-B rewards a soft positive for stopping near its IoU target: at p -> 1 its gradient turns positive
    assert q_half.grads["cse-b-cls"][-1] > 0 > q1.grads["cse-b-cls"][-1]


def test_softmax_curves_are_ce_with_80_other_classes_and_z():
    curves = loss_curves(named("ce", "cse-a-cls"), points=POINTS, qualities=(1.0, 0.5))
    p = np.linspace(1e-3, 1 - 1e-3, POINTS)
    for case, z in zip(curves.cases, (1.0, 0.5), strict=True):
        close(case.x, p, 1e-6)  # the true class's probability with 80 equal other logits and background
        close(case.values["ce"], -np.log(case.x), 1e-6)
        close(case.grads["ce"], case.x - 1, 1e-6)
        # CSE-A: cross-entropy weighted by 1 + sin(Z)
        close(case.values["cse-a-cls"], (1 + np.sin(z)) * -np.log(case.x), 1e-6)
        close(case.grads["cse-a-cls"], (1 + np.sin(z)) * (case.x - 1), 1e-6)
    assert "81 logits" in curves.note


@pytest.fixture(scope="module")
def boxes():
    curves = loss_curves(
        {**named("iou", "giou"), "found": Loss.parse("Cos(Div(Div(I,E),Add(2,2)))", "reg")}, points=POINTS
    )
    params = {fam.title: np.float32(fam.params).astype(np.float64) for fam in box_families(POINTS)}
    return {c.title: c for c in curves.cases}, params


def test_shifted_box_iou_and_giou_match_their_closed_forms(boxes):
    cases, params = boxes
    case, t = cases["shifted box"], params["shifted box"]
    # a 64 px box shifted by t: I = 64 (64 - t), U = 64 (64 + t) = E; IoU = (64 - t) / (64 + t)
    close(case.x, (BOX - t) / (BOX + t), 1e-6)
    for name in ("iou", "giou"):  # the enclosing box is the union: GIoU is IoU here
        close(case.values[name], 2 * t / (BOX + t), 1e-6)
        close(case.grads[name], 2 * BOX / (BOX + t) ** 2, 1e-7)


def test_scaled_box_iou_and_giou_match_their_closed_forms(boxes):
    cases, params = boxes
    case, side = (
        cases["scaled box (centred, inside the target)"],
        params["scaled box (centred, inside the target)"],
    )
    close(case.x, side**2 / BOX**2, 1e-6)
    for name in ("iou", "giou"):
        close(case.values[name], 1 - side**2 / BOX**2, 1e-6)
        close(case.grads[name], -2 * side / BOX**2, 1e-7)  # along the side length: d(1 - s^2/64^2)/ds


def test_a_receding_box_keeps_a_giou_gradient_and_loses_the_iou_one(boxes):
    cases, params = boxes
    case, d = cases["box moving away"], params["box moving away"]
    apart = d > BOX
    assert apart.any() and (~apart).any() and case.marks == (BOX,)
    close(case.x, d, 1e-9)
    # apart: I = 0, U = 2 * 64^2, E = 64 (64 + d): IoU loss 1 with no gradient, GIoU 2 - U/E
    close(case.values["iou"][apart], np.ones(apart.sum()), 1e-6)
    np.testing.assert_array_equal(case.grads["iou"][apart], 0.0)
    close(case.values["giou"][apart], 2 - 2 * BOX / (BOX + d[apart]), 1e-6)
    close(case.grads["giou"][apart], 2 * BOX / (BOX + d[apart]) ** 2, 1e-7)
    # overlapping, the two agree
    close(case.values["giou"][~apart], case.values["iou"][~apart], 1e-6)


def test_a_searched_expression_is_evaluated_as_written(boxes):
    cases, params = boxes
    case, t = cases["shifted box"], params["shifted box"]
    inter, enclosing = BOX * (BOX - t), BOX * (BOX + t)
    close(case.values["found"], np.cos(inter / (4 * enclosing)), 1e-6)
    # d/dt cos(I / 4E) = -sin(I / 4E) * d(I / 4E)/dt, with dI/dt = -64, dE/dt = 64
    ratio_grad = (-BOX * enclosing - inter * BOX) / (4 * enclosing**2)
    close(case.grads["found"], -np.sin(inter / (4 * enclosing)) * ratio_grad, 1e-7)


def test_losses_of_two_branches_are_refused(tmp_path):
    with pytest.raises(CurveError, match="one branch at a time"):
        loss_curves(named("focal", "giou"))
    with pytest.raises(CurveError, match=r"must share a branch.*focal \(cls-sigmoid\).*giou \(reg\)"):
        autoloss.plot_loss_curves(["focal", "giou"], tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def _png_ok(path) -> tuple[int, int]:
    """The PNG opens, has a size, and is not one flat colour."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 0 and height > 0
        gray = np.asarray(image.convert("L"), dtype=np.float64)
    assert gray.std() > 5 and (gray < 128).mean() > 0.001  # curves, text: dark pixels on white
    return width, height


def test_the_api_draws_given_losses_with_labels_and_no_comparison(tmp_path):
    path = autoloss.plot_loss_curves(
        {"mine": "Sub(1,Div(I,U))"}, tmp_path / "sub" / "reg.png", vs=["none"], points=21
    )
    assert path == tmp_path / "sub" / "reg.png"
    _png_ok(path)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_show_plot_writes_a_readable_png(tmp_path):
    out = tmp_path / "sigmoid.png"
    r = run("show", "focal", "Add(Mul(PY,Softplus(Neg(X))),Mul(NY,Softplus(X)))", "--plot", str(out))
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output and r.output.count("branch") == 2  # both losses shown
    width, height = _png_ok(out)
    assert width > 1000 and height > 500  # three columns, two rows


def test_show_plot_with_vs_and_json(tmp_path):
    out = tmp_path / "reg.svg"
    r = run("show", "cse-a-reg", "cse-b-reg", "--vs", "giou", "--vs", "iou", "--json", "--plot", str(out))
    assert r.exit_code == 0, r.output
    assert [info["name"] for info in json.loads(r.output)] == ["cse-a-reg", "cse-b-reg"]
    svg = out.read_text()
    assert "<svg" in svg and "giou" in svg and "cse-b-reg" in svg and "cse-a-cls" not in svg


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["focal", "giou", "--plot", "{out}.png"], "must share a branch"),
        (["focal", "--plot", "{out}.png", "--vs", "nope"], "--vs 'nope' is not a named loss"),
        (["focal", "--plot", "{out}.png", "--vs", "giou"], "giou is a reg loss"),
        (["focal", "--plot", "{out}.xyz"], "matplotlib does not write .xyz files; use one of"),
        (["focal", "--plot", "{out}"], "the file name has no suffix"),
    ],
)
def test_show_plot_errors_are_one_clear_line_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "figure"
    r = run("show", *(a.format(out=out) for a in args))
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert "wrote" not in r.output and not list(tmp_path.iterdir())


def test_vs_without_plot_is_a_usage_error():
    r = run("show", "focal", "--vs", "bce")
    assert r.exit_code == 2 and "give --plot FILE too" in r.output
