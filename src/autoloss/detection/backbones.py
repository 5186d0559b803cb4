"""Backbones with FPN: `tiny`, `resnet18`, `resnet50`, from scratch or from ImageNet weights.

All return features through an FPN plus extra levels: strides 8/16/32 and P6/P7 for the one-stage
detectors, strides 8/16/32 (or 4..32, torchvision's Faster R-CNN layout) and a max-pooled level for
Faster R-CNN.

From scratch (the default) the ResNets use trainable BatchNorm and train every layer: torchvision's
FrozenBatchNorm2d default is for pretrained weights and would leave a from-scratch network unnormalised.
With ImageNet weights (`pretrained`, a torchvision weight name, or `weights_file`, a local ResNet state
dict) they follow torchvision's detection builders instead: FrozenBatchNorm2d holding the ImageNet
statistics, and only the last `trainable_layers` stages trained (default 3: layer2-4; the stem and layer1
stay frozen). Input normalisation is not done here: every detector's GeneralizedRCNNTransform already
normalises [0,1] images with the ImageNet mean/std these weights were trained with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from http.client import HTTPException
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, WeightsEnum, resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from autoloss.errors import AutolossError

BACKBONES = ("tiny", "resnet18", "resnet50")
# FPN widths; FCOS's head hard-codes GroupNorm(32, C), so each must be a multiple of 32.
FPN_CHANNELS = {"tiny": 32, "resnet18": 64, "resnet50": 256}
# Five stride-2 convs (strides 2..32); narrow early layers, where the pixels are, keep a step cheap on CPU.
_TINY_WIDTHS = (8, 16, 32, 64, 128)
# builder, ImageNet weight enum, output widths of layer1..layer4
_RESNETS: dict[str, tuple[Any, type[WeightsEnum], tuple[int, ...]]] = {
    "resnet18": (resnet18, ResNet18_Weights, (64, 128, 256, 512)),
    "resnet50": (resnet50, ResNet50_Weights, (256, 512, 1024, 2048)),
}
# torchvision's detection builders train layer2-4 of a pretrained ResNet: the stem and layer1 learn
# generic edges that a detection fine-tune (small batches, frozen BN) only degrades.
DEFAULT_TRAINABLE_LAYERS = 3
# unfrozen first when trainable_layers grows, as in torchvision's _resnet_fpn_extractor
_STAGES_LAST_FIRST = ("layer4", "layer3", "layer2", "layer1", "conv1")


class BackboneWeightsError(AutolossError, ValueError):
    """Backbone weights that cannot be fetched, read or fitted; the message says which file and why."""


class TinyBody(nn.Module):
    """Five 3x3 stride-2 conv + BN + ReLU layers; returns the maps from stride 2**(first+1) on as "0", ..."""

    def __init__(self, widths: tuple[int, ...] = _TINY_WIDTHS, first: int = 2) -> None:
        super().__init__()
        layers, in_ch = [], 3
        for out_ch in widths:
            layers.append(
                nn.Sequential(
                    nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(inplace=True),
                )
            )
            in_ch = out_ch
        self.layers = nn.ModuleList(layers)
        self.first = first
        self.out_channels_list = list(widths[first:])

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i >= self.first:
                out[str(i - self.first)] = x
        return out


class TinyBackbone(nn.Module):
    """TinyBody + torchvision's FeaturePyramidNetwork; has `out_channels` as the detectors require."""

    def __init__(self, out_channels: int, extra_blocks: ExtraFPNBlock, finest_stride: int = 8) -> None:
        super().__init__()
        # layer i has stride 2**(i+1): stride 8 is layer 2, stride 4 layer 1
        self.body = TinyBody(first=1 if finest_stride == 4 else 2)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels_list, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def build_backbone(
    name: str,
    one_stage: bool,
    fpn_channels: int | None = None,
    *,
    pretrained: str | None = None,
    weights_file: str | Path | None = None,
    trainable_layers: int | None = None,
    finest_stride: int = 8,
) -> nn.Module:
    """An FPN backbone: P3-P7 for one-stage heads (`one_stage`), P3-P5 + pool for Faster R-CNN.

    `pretrained` names a torchvision ImageNet weight of the ResNet ("DEFAULT", "IMAGENET1K_V1", and for
    resnet50 "IMAGENET1K_V2"), fetched through torch hub's cache (a download if it is not there);
    `weights_file` is a local state dict with the torchvision ResNet's own keys (the classifier `fc.*` is
    ignored). Either switches to FrozenBatchNorm2d and trains only the last `trainable_layers` stages
    (0..5, default 3). `finest_stride` 4 adds the stride-4 level (P2-P5 + pool, two-stage only), as
    torchvision's Faster R-CNN has for COCO-size images.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    channels = fpn_channels or FPN_CHANNELS[name]
    if channels % 32:
        raise ValueError(
            f"FPN channels must be a multiple of 32 (FCOS uses GroupNorm(32, C)), got {channels}"
        )
    if finest_stride not in (4, 8) or (one_stage and finest_stride != 8):
        raise ValueError(f"finest_stride must be 8, or 4 for a two-stage detector, got {finest_stride}")
    initialised = pretrained is not None or weights_file is not None
    _check_init_args(name, pretrained, weights_file, trainable_layers)
    # P6/P7 from P5 (in == out channels), as torchvision's FCOS does
    extra = LastLevelP6P7(channels, channels) if one_stage else LastLevelMaxPool()
    if name == "tiny":
        return TinyBackbone(channels, extra, finest_stride)
    builder, _, widths = _RESNETS[name]
    if not initialised:
        net = builder(weights=None, norm_layer=nn.BatchNorm2d)
    else:
        # fetched before the network is built: an offline machine fails fast, with nothing wasted
        if pretrained is not None:
            weights = resolve_pretrained(name, pretrained)
            state, source = _download(name, weights), f"{weights} ({weights.url})"
        else:
            state, source = _read_state_file(Path(weights_file)), str(weights_file)
        net = builder(weights=None, norm_layer=FrozenBatchNorm2d)
        load_resnet_state(net, state, source, name)
        freeze_stages(net, DEFAULT_TRAINABLE_LAYERS if trainable_layers is None else trainable_layers)
    first = 1 if finest_stride == 4 else 2
    return_layers = {f"layer{i}": str(i - first) for i in range(first, 5)}
    in_list = list(widths[first - 1 :])
    return BackboneWithFPN(net, return_layers, in_list, channels, extra_blocks=extra, norm_layer=None)


def _check_init_args(
    name: str, pretrained: str | None, weights_file: str | Path | None, trainable_layers: int | None
) -> None:
    if pretrained is not None and weights_file is not None:
        raise ValueError("give pretrained weights or a backbone weights file, not both")
    initialised = pretrained is not None or weights_file is not None
    if name == "tiny" and initialised:
        raise ValueError(
            "the tiny backbone has no ImageNet weights; use resnet18 or resnet50 for pretrained or "
            "backbone weights"
        )
    if trainable_layers is None:
        return
    if not initialised:
        # torchvision warns and trains everything; an explicit refusal says the setting had no effect
        raise ValueError(
            "trainable_layers applies to ImageNet-initialised backbones only (pretrained or backbone "
            "weights); a from-scratch backbone trains all layers"
        )
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise ValueError(f"trainable_layers must be an integer 0..5, got {trainable_layers!r}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in 0..5 (5: all layers), got {trainable_layers}")


def resolve_pretrained(name: str, pretrained: str) -> WeightsEnum:
    """The torchvision weight enum member `pretrained` ("DEFAULT", "IMAGENET1K_V1", ...) of ResNet `name`."""
    if name not in _RESNETS:
        raise ValueError(f"backbone {name!r} has no ImageNet weights; use one of {', '.join(_RESNETS)}")
    weight_enum = _RESNETS[name][1]
    key = str(pretrained).strip()
    key = key.removeprefix(f"{weight_enum.__name__}.").upper()  # also take "ResNet50_Weights.DEFAULT"
    try:
        return weight_enum[key]
    except KeyError:
        valid = ", ".join(weight_enum.__members__)
        raise BackboneWeightsError(
            f"unknown pretrained weights {pretrained!r} for {name}; expected one of {valid}"
        ) from None


def _download(name: str, weights: WeightsEnum) -> Mapping[str, Any]:
    """The weights' state dict from torch hub's cache, downloading it there first if absent.

    Called through `torch.hub` (not torchvision's `get_state_dict`, which binds the function at import)
    so that tests can stand in for the network.
    """
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, progress=True, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError, HTTPException) as err:  # URLError is an OSError; a bad hash RuntimeError
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise BackboneWeightsError(
            f"could not download the {name} weights {weights} ({_first_line(err)}); download "
            f"{weights.url} elsewhere and pass the file with --backbone-weights FILE, or put it in {cache}"
        ) from None


def _read_state_file(path: Path) -> Any:
    try:
        # weights_only: a weights file is data; never unpickle arbitrary objects from it
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types (pickle, zip, OS errors) for a bad file
        raise BackboneWeightsError(f"cannot load backbone weights {path}: {_first_line(err)}") from None


def load_resnet_state(net: nn.Module, state: Any, source: str, name: str) -> None:
    """Strictly load a torchvision ResNet state dict into `net`, ignoring the classifier (`fc.*`).

    Raises BackboneWeightsError naming `source` and the first key that is missing, unexpected or of
    another shape.
    """
    if not isinstance(state, Mapping):
        raise BackboneWeightsError(
            f"backbone weights {source} are not a state dict (found {type(state).__name__})"
        )
    expected = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    # FrozenBatchNorm2d has no batch counter; it drops a BatchNorm checkpoint's on loading, as here
    given = {
        str(k): v
        for k, v in state.items()
        if not str(k).startswith("fc.") and not str(k).endswith("num_batches_tracked")
    }
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    problem = None
    for key, ref in expected.items():
        value = given.get(key)
        if value is None:
            problem = f"missing {key!r}"
        elif not isinstance(value, Tensor):
            problem = f"{key!r} is a {type(value).__name__}, not a tensor"
        elif value.shape != ref.shape:
            problem = f"{key!r} has shape {tuple(value.shape)}, expected {tuple(ref.shape)}"
        if problem:
            break
    if problem is None and unexpected:
        problem = f"unexpected {unexpected[0]!r}"
    if problem is not None:
        counts = f"{len(missing)} missing and {len(unexpected)} unexpected keys in all"
        if len(missing) == len(expected) and given:
            counts += f"; is it a torchvision {name} state dict?"
        raise BackboneWeightsError(f"backbone weights {source} do not fit a {name}: {problem} ({counts})")
    net.load_state_dict(given, strict=False)  # only fc.* can be absent: the classifier is dropped


def freeze_stages(net: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the last `trainable_layers` ResNet stages (torchvision's detection convention).

    Replicates `torchvision.models.detection.backbone_utils._resnet_fpn_extractor`'s requires_grad logic,
    which is private and also fixes the FPN width to 256.
    """
    train = list(_STAGES_LAST_FIRST[:trainable_layers])
    if trainable_layers == 5:
        train.append("bn1")
    for param_name, param in net.named_parameters():
        if not any(param_name.startswith(stage) for stage in train):
            param.requires_grad_(False)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
