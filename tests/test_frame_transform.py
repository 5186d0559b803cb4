"""FrameTransform: the detector's resize skipped where it is the identity, with trainings unchanged."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from autoloss.detection.frame_transform import FrameTransform, skip_identity_resize
from autoloss.detection.presets import preset
from autoloss.detection.runner import build_for, evaluate_detector, load_experiment_data
from autoloss.detection.train import train_detector

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize(
    ("shape", "bounds", "identity"),
    [((3, 128, 128), (128, 128), True), ((3, 96, 160), (96, 160), True), ((3, 100, 60), (128, 128), False)],
)
@pytest.mark.parametrize("training", [True, False])
def test_resize_gives_torchvisions_result_and_rng_stream(shape, bounds, identity, training):
    stock = GeneralizedRCNNTransform(*bounds, MEAN, STD)
    ours = FrameTransform(*bounds, MEAN, STD)
    stock.train(training)
    ours.train(training)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(shape, generator=gen)
    boxes = torch.tensor([[3.0, 4.0, 50.0, 40.0]])
    outputs, states = [], []
    for transform in (stock, ours):
        torch.manual_seed(7)
        out_image, out_target = transform.resize(image.clone(), {"boxes": boxes.clone()})
        outputs.append((out_image, out_target["boxes"]))
        states.append(torch.random.get_rng_state())
    (a_img, a_box), (b_img, b_box) = outputs
    assert torch.equal(a_img, b_img) and torch.equal(a_box, b_box)
    assert torch.equal(states[0], states[1])  # the same draws from the global RNG
    assert (tuple(a_img.shape) == shape) == identity


def test_builtin_and_user_models_get_the_frame_transform():
    exp = preset("tiny")
    data = load_experiment_data(exp)
    model = build_for(exp, data, None, None)
    assert type(model.model.transform) is FrameTransform
    plain = torch.nn.Module()
    plain.transform = GeneralizedRCNNTransform(64, 64, MEAN, STD)
    assert type(skip_identity_resize(plain).transform) is FrameTransform
    assert skip_identity_resize(torch.nn.Linear(2, 2)) is not None  # no transform: left alone


@pytest.mark.parametrize("detector", ["fcos", "faster_rcnn"])
def test_a_training_is_bit_for_bit_the_same_with_torchvisions_transform(detector):
    # Faster R-CNN samples proposals from the global RNG: it would show a changed RNG stream.
    exp = preset("tiny", detector=detector, train={"iterations": 6})
    results = []
    for frame in (True, False):
        data = load_experiment_data(exp)
        model = build_for(exp, data, None, None)
        if not frame:
            model.model.transform.__class__ = GeneralizedRCNNTransform
        report = train_detector(model, data.train, exp.train, seed=0)
        results.append(
            (report.status, report.final_loss, report.loss_curve, evaluate_detector(model, data.val))
        )
    assert results[0][0] == "ok"
    assert results[0] == results[1]
