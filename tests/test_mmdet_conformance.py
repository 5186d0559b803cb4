"""The `--format mmdet` export against MMDetection's own code: the exported `giou`, `iou` and `focal` give
the values and gradients of mmdet's GIoULoss, IoULoss (mode="linear": 1 - IoU) and sigmoid FocalLoss
(gamma 2, alpha 0.25) under `weight`, `avg_factor`, `reduction_override` and mmdet's label convention
(background = num_classes), and the classes build from config dicts in a real mmengine Registry.

MMDetection does not import on a CPU-only machine; tests/mmdet_loader.py loads its pure-torch loss files
without `mmdet/__init__.py`. Needs mmengine (+ yapf, addict, termcolor) and mmdet 3.x; skips otherwise.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from autoloss.export import export

pytest.importorskip("mmengine", reason="mmengine is not installed: no MMDetection conformance check")
if importlib.util.find_spec("mmdet") is None:
    pytest.skip("mmdet is not installed: no MMDetection conformance check", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).parent))
from mmdet_loader import MMDetUnavailable, load_mmdet

REDUCTIONS = ("none", "mean", "sum")
K = 4  # classes; label K is background


@pytest.fixture(scope="module")
def mm():
    try:
        return load_mmdet()
    except MMDetUnavailable as exc:
        pytest.skip(f"MMDetection's loss code does not load here: {exc}")


def _load(name: str, tmp_path: Path) -> types.ModuleType:
    file = tmp_path / f"conformance_{name}.py"
    file.write_text(export(name, "mmdet"), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(f"conformance_{name}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mmdet_export")
    return {name: _load(name, tmp) for name in ("giou", "iou", "focal")}


def boxes(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired xyxy pixel boxes: most overlap, the last two do not."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 60 + 5
    target = torch.cat([xy, xy + wh], 1)
    pred = target + torch.randn(n, 4, generator=g) * 6
    pred[:, 2:] = torch.maximum(pred[:, 2:], pred[:, :2] + 1)
    pred[-2:] = target[-2:] + 500.0  # disjoint
    return pred, target


def reference(name: str, mm, **kwargs):
    if name == "giou":
        return mm.GIoULoss(**kwargs)
    return mm.IoULoss(mode="linear", **kwargs)


def both(fn_a, fn_b, pred, *args, **kwargs):
    """Values and d/dpred of two callables on the same inputs."""
    out = []
    for fn in (fn_a, fn_b):
        p = pred.detach().clone().requires_grad_(True)
        value = fn(p, *args, **kwargs)
        (grad,) = torch.autograd.grad(value.sum(), p, allow_unused=True)
        out.append((value.detach(), torch.zeros_like(p) if grad is None else grad))
    return out


def assert_same(pair, atol=1e-5, rtol=1e-4):
    (va, ga), (vb, gb) = pair
    assert va.shape == vb.shape
    torch.testing.assert_close(va, vb, atol=atol, rtol=rtol)
    torch.testing.assert_close(ga, gb, atol=atol, rtol=rtol)


# --- reg: GIoULoss and IoULoss ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["giou", "iou"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighting", ["none", "per-box", "per-coordinate", "avg_factor"])
def test_reg_matches_mmdetection(mm, exported, name, reduction, weighting):
    pred, target = boxes()
    kwargs = {"reduction_override": reduction}
    if weighting in ("per-box", "avg_factor"):
        kwargs["weight"] = torch.linspace(0.0, 2.0, pred.shape[0])
    if weighting == "per-coordinate":
        kwargs["weight"] = torch.rand(pred.shape[0], 4, generator=torch.Generator().manual_seed(1))
    if weighting == "avg_factor":
        if reduction == "sum":
            for loss in (exported[name].SearchedRegLoss(), reference(name, mm)):
                with pytest.raises(ValueError, match="avg_factor"):
                    loss(pred, target, avg_factor=5.0, **kwargs)
            return
        kwargs["avg_factor"] = 5.0
    ours = exported[name].SearchedRegLoss(loss_weight=2.0)
    theirs = reference(name, mm, loss_weight=2.0)
    assert_same(both(ours, theirs, pred, target, **kwargs))


@pytest.mark.parametrize("name", ["giou", "iou"])
def test_reg_default_reduction_is_mean_like_mmdetection(mm, exported, name):
    pred, target = boxes(seed=3)
    assert_same(both(exported[name].SearchedRegLoss(), reference(name, mm), pred, target))
    assert_same(
        both(
            exported[name].SearchedRegLoss(reduction="sum"),
            reference(name, mm, reduction="sum"),
            pred,
            target,
        )
    )


@pytest.mark.parametrize("name", ["giou", "iou"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reg_all_zero_weight_is_a_connected_zero(mm, exported, name, reduction):
    pred, target = boxes(4)
    weight = torch.zeros(4)
    pair = both(
        exported[name].SearchedRegLoss(),
        reference(name, mm),
        pred,
        target,
        weight=weight,
        reduction_override=reduction,
    )
    assert_same(pair)
    assert pair[0][0].shape == () and pair[0][0].item() == 0.0


def test_reg_all_zero_weight_without_reduction_keeps_one_value_per_box(mm, exported):
    # IoULoss's behaviour (GIoULoss returns a scalar 0 here; the export keeps the [N] shape of "none").
    pred, target = boxes(4)
    for name in ("giou", "iou"):
        pair = both(
            exported[name].SearchedRegLoss(),
            mm.IoULoss(mode="linear"),
            pred,
            target,
            weight=torch.zeros(4),
            reduction_override="none",
        )
        assert pair[0][0].shape == (4,)
        torch.testing.assert_close(pair[0][0], torch.zeros(4))
    assert_same(pair)


# --- cls: sigmoid focal loss --------------------------------------------------------------------------


def cls_batch(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, generator=g) * 3
    labels = torch.randint(0, K + 1, (n,), generator=g)  # K = background
    labels[:2] = K
    labels[2] = 0
    return logits, labels


def focal(mm, **kwargs):
    return mm.FocalLoss(use_sigmoid=True, gamma=2.0, alpha=0.25, **kwargs)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighting", ["none", "per-box", "per-element", "flattened", "avg_factor"])
def test_focal_matches_mmdetection(mm, exported, reduction, weighting):
    logits, labels = cls_batch()
    g = torch.Generator().manual_seed(2)
    kwargs = {"reduction_override": reduction}
    if weighting in ("per-box", "avg_factor"):
        kwargs["weight"] = torch.rand(logits.shape[0], generator=g)
    if weighting == "per-element":
        kwargs["weight"] = torch.rand(*logits.shape, generator=g)
    if weighting == "flattened":  # FSAF's per-element weight, flattened to [N * K]
        kwargs["weight"] = torch.rand(logits.numel(), generator=g)
    if weighting == "avg_factor":
        if reduction == "sum":
            for loss in (exported["focal"].SearchedClsLoss(), focal(mm)):
                with pytest.raises(ValueError, match="avg_factor"):
                    loss(logits, labels, avg_factor=3.0, **kwargs)
            return
        kwargs["avg_factor"] = 3.0
    ours = exported["focal"].SearchedClsLoss(loss_weight=1.5)
    assert_same(both(ours, focal(mm, loss_weight=1.5), logits, labels, **kwargs))


def test_focal_one_hot_targets_match_py_sigmoid_focal_loss(mm, exported):
    logits, labels = cls_batch(seed=5)
    onehot = torch.nn.functional.one_hot(labels, K + 1)[:, :K]
    ours = exported["focal"].SearchedClsLoss()
    assert_same(both(ours, focal(mm), logits, onehot))
    assert_same(
        both(
            lambda p, t: ours(p, t, reduction_override="sum"),
            lambda p, t: mm.py_sigmoid_focal_loss(p, t, gamma=2.0, alpha=0.25, reduction="sum"),
            logits,
            onehot,
        )
    )


def test_focal_all_background_with_zero_avg_factor_is_zero(mm, exported):
    logits, _ = cls_batch()
    labels = torch.full((logits.shape[0],), K)
    pair = both(exported["focal"].SearchedClsLoss(), focal(mm), logits, labels, avg_factor=0.0)
    assert_same(pair, rtol=1e-3)  # sum / float32 eps: large, but equal


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_focal_half_precision_logits_are_computed_in_float32(mm, exported, dtype):
    logits, labels = cls_batch(seed=7)
    logits = logits * 6  # confident logits: sigmoid near 0/1, where half precision underflows
    half = logits.to(dtype).requires_grad_(True)
    ours = exported["focal"].SearchedClsLoss()(half, labels, reduction_override="none")
    assert ours.dtype == torch.float32
    assert torch.isfinite(ours).all()
    want = focal(mm)(half.detach().float(), labels, reduction_override="none")
    torch.testing.assert_close(ours.detach(), want, atol=1e-5, rtol=1e-4)
    ours.sum().backward()
    assert half.grad is not None and half.grad.dtype == dtype and torch.isfinite(half.grad.float()).all()


# --- reduction and registry -------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("avg_factor", [None, 4.0, 0.0])
def test_reduce_loss_is_weight_reduce_loss(mm, exported, reduction, avg_factor):
    values = torch.rand(6, 3)
    weight = torch.rand(6, 1)
    if reduction == "sum" and avg_factor is not None:
        with pytest.raises(ValueError):
            mm.weight_reduce_loss(values, weight, reduction, avg_factor)
        with pytest.raises(ValueError):
            exported["focal"].reduce_loss(values, weight, reduction, avg_factor)
        return
    torch.testing.assert_close(
        exported["focal"].reduce_loss(values, weight, reduction, avg_factor),
        mm.weight_reduce_loss(values, weight, reduction, avg_factor),
    )


def test_exported_classes_build_from_config_in_a_registry(mm, exported):
    registry = mm.Registry("autoloss conformance")
    registry.register_module(module=exported["giou"].SearchedRegLoss)
    registry.register_module(name="SearchedFocal", module=exported["focal"].SearchedClsLoss)
    reg = registry.build(dict(type="SearchedRegLoss", loss_weight=2.0))
    assert isinstance(reg, exported["giou"].SearchedRegLoss) and reg.loss_weight == 2.0
    pred, target = boxes()
    assert_same(both(reg, mm.GIoULoss(loss_weight=2.0), pred, target))
    cls = registry.build(dict(type="SearchedFocal", use_sigmoid=True, alpha=0.25, loss_weight=1.0))
    assert cls.use_sigmoid is True and cls.alpha == 0.25
    logits, labels = cls_batch()
    assert_same(both(cls, focal(mm), logits, labels))


def test_focal_style_config_keys_are_refused_with_a_clear_message(mm, exported):
    registry = mm.Registry("autoloss conformance keys")
    registry.register_module(module=exported["focal"].SearchedClsLoss)
    with pytest.raises(ValueError, match=r"has no gamma .*_delete_=True"):
        registry.build(dict(type="SearchedClsLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0))
    with pytest.raises(ValueError, match="use_sigmoid=True"):
        registry.build(dict(type="SearchedClsLoss", use_sigmoid=False))
    with pytest.raises(ValueError, match="activated"):
        registry.build(dict(type="SearchedClsLoss", activated=True))


def test_config_snippet_drops_inherited_focal_keys():
    # A config that inherits RetinaNet's loss_cls (FocalLoss, gamma=2.0) must replace it, not merge into it.
    text = export("focal", "mmdet")
    want = (
        "loss_cls=dict(type='SearchedClsLoss', use_sigmoid=True, alpha=0.25, loss_weight=1.0, _delete_=True)"
    )
    assert want in text


def test_loader_leaves_no_stub_modules_behind(mm):
    stubs = [
        k
        for k, m in sys.modules.items()
        if k.split(".")[0] in ("mmdet", "mmcv") and getattr(m, "__file__", None) is None
    ]
    assert stubs == []
