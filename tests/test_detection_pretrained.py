"""ImageNet-initialised backbones, geometry that follows the input scale, resize bounds, and AMP parity.

Nothing here touches the network: torch hub's download is replaced where a test needs it, so the tests do
not depend on the machine being offline or on what its hub cache holds.
"""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torchvision
from torchvision.models.detection import faster_rcnn as tv_faster_rcnn
from torchvision.models.detection import retinanet as tv_retinanet
from torchvision.ops.misc import FrozenBatchNorm2d

from autoloss.detection.backbones import BackboneWeightsError, build_backbone
from autoloss.detection.detectors import GEOMETRIES, build_detector
from autoloss.errors import AutolossError

K = 3
R18_URL = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url


def _batch(n: int = 2, size: int = 64):
    """Random [0,1] images with a few boxes, labels 1..K (independent of the data pipeline)."""
    gen = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=gen) for _ in range(n)]
    boxes = torch.tensor([[4.0, 6, 30, 36], [28, 20, 60, 58]])
    targets = [{"boxes": boxes * (size / 64), "labels": torch.tensor([1, K])} for _ in range(n)]
    return images, targets


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    """A torchvision resnet18 state dict as `torch.save(resnet18().state_dict(), f)` writes it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("weights") / "r18.pth"
    torch.save(state, path)
    return path, state


def _body(detector):
    return detector.model.backbone.body


@pytest.mark.parametrize("name", ["fcos", "retinanet", "faster_rcnn"])
def test_every_detector_normalises_with_imagenet_mean_and_std(name):
    transform = build_detector(name, K).model.transform
    assert transform.image_mean == [0.485, 0.456, 0.406]
    assert transform.image_std == [0.229, 0.224, 0.225]


def test_local_resnet18_file_loads_frozen_bn_and_trains_layer2_to_4(r18_file):
    path, state = r18_file
    detector = build_detector("fcos", K, "resnet18", image_size=64, seed=0, backbone_weights=path)
    body = _body(detector)
    loaded = body.state_dict()
    expected = {k: v for k, v in state.items() if not k.startswith("fc.") and "num_batches_tracked" not in k}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())
    # torchvision's convention for pretrained weights: frozen ImageNet statistics, stem and layer1 frozen
    assert any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    for param_name, param in body.named_parameters():
        assert param.requires_grad == param_name.startswith(("layer2", "layer3", "layer4")), param_name
    assert all(p.requires_grad for p in detector.model.backbone.fpn.parameters())
    assert all(p.requires_grad for p in detector.model.head.parameters())
    losses = detector.train()(*_batch())
    sum(losses.values()).backward()
    assert body.conv1.weight.grad is None and body.layer4[0].conv1.weight.grad is not None


def test_trainable_layers_five_trains_the_whole_backbone(r18_file):
    path, _ = r18_file
    body = _body(build_detector("fcos", K, "resnet18", backbone_weights=path, trainable_layers=5))
    assert all(p.requires_grad for p in body.parameters())
    body = _body(build_detector("fcos", K, "resnet18", backbone_weights=path, trainable_layers=0))
    assert not any(p.requires_grad for p in body.parameters())


def _wrong_shape(state):
    return {**state, "layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (_wrong_shape, r"'layer1\.0\.conv1\.weight' has shape \(64, 64, 1, 1\), expected \(64, 64, 3, 3\)"),
        (lambda state: [1, 2, 3], "not a state dict"),
        (
            lambda state: {k: v for k, v in state.items() if k != "layer3.0.bn1.bias"},
            "missing 'layer3.0.bn1.bias'",
        ),
        (lambda state: {**state, "extra.weight": torch.ones(1)}, "unexpected 'extra.weight'"),
        (lambda state: {f"backbone.body.{k}": v for k, v in state.items()}, "missing 'conv1.weight'"),
        (lambda state: b"not a torch file", "cannot load backbone weights"),
    ],
    ids=["wrong-shape", "list", "missing-key", "unexpected-key", "detector-prefix", "garbage"],
)
def test_unusable_weights_file_is_a_clear_error_naming_the_file(tmp_path, r18_file, content, match):
    path = tmp_path / "bad.pth"
    value = content(r18_file[1])
    if isinstance(value, bytes):
        path.write_bytes(value)
    else:
        torch.save(value, path)
    with pytest.raises(BackboneWeightsError, match=match) as info:
        build_detector("fcos", K, "resnet18", backbone_weights=path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_pretrained_without_network_says_how_to_supply_the_file(monkeypatch):
    def offline(url, *args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(BackboneWeightsError) as info:
        build_detector("fcos", K, "resnet18", pretrained="DEFAULT")
    message = str(info.value)
    assert isinstance(info.value, AutolossError) and isinstance(info.value, ValueError)
    assert "\n" not in message and "could not download" in message
    assert "--backbone-weights" in message and R18_URL in message
    assert str(torch.hub.get_dir()) in message and "checkpoints" in message


def test_pretrained_loads_what_torch_hub_returns(monkeypatch, r18_file):
    """What the hub returns (from its cache or a download) is what the backbone holds, hash-checked."""
    calls = []

    def hub(url, *args, **kwargs):
        calls.append((url, kwargs))
        return dict(r18_file[1])

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", hub)
    body = _body(build_detector("retinanet", K, "resnet18", pretrained="imagenet1k_v1"))
    assert calls == [(R18_URL, {"progress": True, "check_hash": True, "weights_only": True})]
    assert torch.equal(body.conv1.weight, r18_file[1]["conv1.weight"])


def test_pretrained_file_in_the_hub_cache_loads_without_download(monkeypatch, tmp_path, r18_file):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))  # what torch.hub.set_dir sets
    (tmp_path / "checkpoints").mkdir()
    torch.save(r18_file[1], tmp_path / "checkpoints" / R18_URL.rsplit("/", 1)[-1])
    body = _body(build_detector("fcos", K, "resnet18", pretrained="DEFAULT"))
    assert torch.equal(body.layer4[1].conv2.weight, r18_file[1]["layer4.1.conv2.weight"])


def test_unknown_pretrained_name_lists_the_valid_ones():
    # resnet18 has a single ImageNet weight; V2 exists for resnet50 only
    with pytest.raises(BackboneWeightsError, match="expected one of IMAGENET1K_V1, DEFAULT"):
        build_backbone("resnet18", one_stage=True, pretrained="IMAGENET1K_V2")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "tiny", "pretrained": "DEFAULT"}, "tiny backbone has no ImageNet weights"),
        ({"backbone": "tiny", "backbone_weights": "x.pth"}, "tiny backbone has no ImageNet weights"),
        ({"backbone": "resnet18", "pretrained": "DEFAULT", "backbone_weights": "x.pth"}, "not both"),
        ({"backbone": "resnet18", "trainable_layers": 3}, "ImageNet-initialised backbones only"),
        ({"backbone": "resnet18", "backbone_weights": "x.pth", "trainable_layers": 6}, r"in 0\.\.5"),
        ({"geometry": "huge"}, "unknown geometry 'huge'"),
        ({"min_size": 16}, "min_size must be an integer >= 32"),
        ({"min_size": 256}, r"max_size \(128\) must be >= min_size \(256\)"),
    ],
)
def test_backbone_and_geometry_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_detector("fcos", K, **kwargs)


def _anchor_sizes(detector):
    model = detector.model
    generator = model.rpn.anchor_generator if detector.name == "faster_rcnn" else model.anchor_generator
    return tuple(tuple(s) for s in generator.sizes)


def test_auto_geometry_is_torchvision_coco_defaults_at_800_px():
    rcnn = build_detector("faster_rcnn", K, min_size=800, max_size=1333)
    assert rcnn.geometry == "coco"
    assert _anchor_sizes(rcnn) == tv_faster_rcnn._default_anchorgen().sizes
    assert rcnn.model.rpn._pre_nms_top_n == {"training": 2000, "testing": 1000}
    assert rcnn.model.rpn._post_nms_top_n == {"training": 2000, "testing": 1000}
    heads = rcnn.model.roi_heads
    assert heads.fg_bg_sampler.batch_size_per_image == 512
    assert heads.box_head.fc7.out_features == 1024 and heads.box_roi_pool.sampling_ratio == 2
    assert heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]  # P2-P5, as torchvision's
    retina = build_detector("retinanet", K, min_size=800, max_size=1333)
    assert _anchor_sizes(retina) == tv_retinanet._default_anchorgen().sizes
    assert rcnn.model.transform.min_size == (800,) and rcnn.model.transform.max_size == 1333


def test_auto_geometry_keeps_the_tiny_settings_at_128_px():
    rcnn = build_detector("faster_rcnn", K)
    assert rcnn.geometry == "tiny"
    assert _anchor_sizes(rcnn) == ((16,), (32,), (64,), (128,))
    assert rcnn.model.rpn._pre_nms_top_n == {"training": 600, "testing": 300}
    assert rcnn.model.rpn._post_nms_top_n == {"training": 300, "testing": 150}
    heads = rcnn.model.roi_heads
    assert heads.fg_bg_sampler.batch_size_per_image == 128
    assert heads.box_head.fc7.out_features == 256 and heads.box_roi_pool.sampling_ratio == 1
    # the octave sizes of 16..256 as they were computed before the table existed
    old = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in (16, 32, 64, 128, 256))
    assert _anchor_sizes(build_detector("retinanet", K)) == old == GEOMETRIES["tiny"].retinanet_anchor_sizes
    # an explicit geometry wins over the size
    assert build_detector("faster_rcnn", K, min_size=800, max_size=1333, geometry="tiny").geometry == "tiny"


@pytest.mark.parametrize("name", ["fcos", "retinanet", "faster_rcnn"])
def test_coco_geometry_trains_a_step(name):
    detector = build_detector(name, K, image_size=64, seed=0, geometry="coco").train()
    losses = detector(*_batch())
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)


def test_resize_bounds_keep_aspect_and_return_boxes_in_the_input_frame():
    detector = build_detector("fcos", K, seed=0, min_size=64, max_size=96).eval()
    image = torch.rand(3, 64, 120, generator=torch.Generator().manual_seed(1))
    image_list, _ = detector.model.transform([image])
    # the long side caps the scale at 96/120: 51x96, padded to a multiple of 32
    assert image_list.image_sizes == [(51, 96)] and tuple(image_list.tensors.shape[-2:]) == (64, 96)
    with torch.no_grad():
        (det,) = detector([image])
    boxes = det["boxes"]
    assert len(boxes) > 0
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= 120).all() and (boxes[:, 3] <= 64).all()
    assert boxes[:, 2].max() > 96  # beyond the resized width: mapped back to the input's frame


def test_default_fcos_takes_a_batch_of_one_image():
    # the tiny FPN's GroupNorm(32, 32) sees one value per group on the 1x1 P7 map of a lone 128 px image
    detector = build_detector("fcos", K, seed=0)
    images, targets = _batch(n=1, size=128)
    losses = detector.train()(images, targets)
    assert torch.isfinite(sum(losses.values()))
    with torch.no_grad():
        (det,) = detector.eval()(images)
    assert len(det["boxes"]) > 0


def _one_stage_parts(detector):
    inner = detector.model
    images, targets = _batch()
    shifted = [{**t, "labels": t["labels"] - 1} for t in targets]
    image_list, targets_t = inner.transform(images, shifted)
    features = list(inner.backbone(image_list.tensors).values())
    with torch.no_grad():
        head_outputs = inner.head(features)
    anchors = inner.anchor_generator(image_list, features)
    return inner, targets_t, head_outputs, anchors, features


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_stock_one_stage_loss_of_half_precision_outputs_is_computed_in_float32(name):
    inner, targets, head_outputs, anchors, features = _one_stage_parts(build_detector(name, K, seed=0))
    half = {k: v.bfloat16() for k, v in head_outputs.items()}  # what the head returns under bf16 autocast
    widened = {k: v.float() for k, v in half.items()}
    extra = [[f.size(2) * f.size(3) for f in features]] if name == "fcos" else []
    ours = inner.compute_loss(targets, half, anchors, *extra)
    reference = inner.compute_loss(targets, widened, anchors, *extra)
    for key, value in ours.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)


def test_stock_two_stage_loss_of_half_precision_outputs_is_computed_in_float32():
    heads = build_detector("faster_rcnn", K, seed=0).model.roi_heads
    proposals = [torch.tensor([[10.0, 10, 50, 50], [60, 60, 90, 100], [0, 0, 20, 20]])]
    gt = {"boxes": torch.tensor([[12.0, 8, 48, 52], [58, 62, 95, 98]]), "labels": torch.tensor([1, 3])}
    labels, matched = [torch.tensor([1, 3, 0])], [torch.tensor([0, 1, 0])]
    reg_targets = list(heads.box_coder.encode([gt["boxes"][matched[0]]], proposals))
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, K + 1, generator=gen).bfloat16()
    deltas = (torch.randn(3, 4 * (K + 1), generator=gen) * 0.1).bfloat16()
    ours = heads.box_losses(logits, deltas, proposals, matched, labels, reg_targets, [gt])
    reference = heads.box_losses(
        logits.float(), deltas.float(), proposals, matched, labels, reg_targets, [gt]
    )
    for key, value in ours.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0)
