"""Detector construction: every detector/backbone pair trains a step and predicts labels 1..K."""

from __future__ import annotations

import pytest
import torch

from autoloss.detection.backbones import build_backbone
from autoloss.detection.detectors import build_detector, load_weights
from autoloss.detection.loader import batch_of
from autoloss.detection.shapes import generate_shapes

K = 5


def _batch(n: int = 2, size: int = 64):
    data = generate_shapes("train", n, size, seed=2)
    return batch_of(data, list(range(n)))


@pytest.mark.parametrize(
    ("name", "backbone"),
    [
        ("fcos", "tiny"),
        ("retinanet", "tiny"),
        ("faster_rcnn", "tiny"),
        ("fcos", "resnet18"),
        ("faster_rcnn", "resnet18"),
        ("retinanet", "resnet50"),
    ],
)
def test_detector_trains_a_step_and_predicts_dataset_labels(name, backbone):
    detector = build_detector(name, K, backbone, image_size=64, seed=0).train()
    images, targets = _batch()
    losses = detector(images, targets)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    # trainable BatchNorm (not torchvision's frozen default): a from-scratch backbone must normalise
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.modules())
    detector.eval()
    with torch.no_grad():
        detections = detector(images)
    for det in detections:
        if len(det["labels"]):
            assert 1 <= det["labels"].min() and det["labels"].max() <= K


def test_seed_fixes_initial_weights_without_touching_global_rng():
    state = torch.random.get_rng_state()
    a = build_detector("fcos", K, seed=7).state_dict()
    b = build_detector("fcos", K, seed=7).state_dict()
    c = build_detector("fcos", K, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_weights_round_trip_through_a_local_file(tmp_path):
    source = build_detector("retinanet", K, seed=1)
    path = tmp_path / "w.pt"
    torch.save(source.model.state_dict(), path)
    loaded = build_detector("retinanet", K, seed=2, weights=path)
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in source.model.state_dict().items())
    with pytest.raises(ValueError, match="do not fit a retinanet with backbone tiny and 3 classes"):
        load_weights(build_detector("retinanet", 3), path)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "yolo"}, "unknown detector 'yolo'"),
        ({"backbone": "vgg"}, "unknown backbone 'vgg'"),
        ({"image_size": 100}, "multiple of 32"),
        ({"num_classes": 0}, "num_classes"),
        ({"cls_loss": "ce"}, "cls-softmax"),
    ],
)
def test_build_detector_rejects_bad_arguments(kwargs, match):
    args = {"name": "fcos", "num_classes": K, **kwargs}
    with pytest.raises(ValueError, match=match):
        build_detector(**args)


def test_fpn_width_must_suit_fcos_group_norm():
    with pytest.raises(ValueError, match="multiple of 32"):
        build_backbone("tiny", one_stage=True, fpn_channels=48)
