"""Backbones with FPN, built from scratch (no download): `tiny`, `resnet18`, `resnet50`.

All return strides 8/16/32 features through an FPN plus extra levels: P6/P7 for the one-stage detectors,
a max-pooled level for Faster R-CNN. Normalisation is trainable BatchNorm: torchvision's FrozenBatchNorm2d
default is for pretrained weights and leaves a from-scratch network unnormalised.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

BACKBONES = ("tiny", "resnet18", "resnet50")
# FPN widths; FCOS's head hard-codes GroupNorm(32, C), so each must be a multiple of 32.
FPN_CHANNELS = {"tiny": 32, "resnet18": 64, "resnet50": 256}
# Five stride-2 convs (strides 2..32); narrow early layers, where the pixels are, keep a step cheap on CPU.
_TINY_WIDTHS = (8, 16, 32, 64, 128)


class TinyBody(nn.Module):
    """Five 3x3 stride-2 conv + BN + ReLU layers; returns the stride 8, 16 and 32 maps as "0", "1", "2"."""

    def __init__(self, widths: tuple[int, ...] = _TINY_WIDTHS) -> None:
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
        self.out_channels_list = list(widths[2:])

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        out: OrderedDict[str, Tensor] = OrderedDict()
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i >= 2:
                out[str(i - 2)] = x
        return out


class TinyBackbone(nn.Module):
    """TinyBody + torchvision's FeaturePyramidNetwork; has `out_channels` as the detectors require."""

    def __init__(self, out_channels: int, extra_blocks: ExtraFPNBlock) -> None:
        super().__init__()
        self.body = TinyBody()
        self.fpn = FeaturePyramidNetwork(self.body.out_channels_list, out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(x))


def build_backbone(name: str, one_stage: bool, fpn_channels: int | None = None) -> nn.Module:
    """An FPN backbone: P3-P7 for one-stage heads (`one_stage`), P3-P5 + pool for Faster R-CNN."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    channels = fpn_channels or FPN_CHANNELS[name]
    if channels % 32:
        raise ValueError(
            f"FPN channels must be a multiple of 32 (FCOS uses GroupNorm(32, C)), got {channels}"
        )
    # P6/P7 from P5 (in == out channels), as torchvision's FCOS does
    extra = LastLevelP6P7(channels, channels) if one_stage else LastLevelMaxPool()
    if name == "tiny":
        return TinyBackbone(channels, extra)
    net = (resnet18 if name == "resnet18" else resnet50)(weights=None, norm_layer=nn.BatchNorm2d)
    in_list = [128, 256, 512] if name == "resnet18" else [512, 1024, 2048]
    return_layers = {"layer2": "0", "layer3": "1", "layer4": "2"}
    return BackboneWithFPN(net, return_layers, in_list, channels, extra_blocks=extra, norm_layer=None)
