"""The search's view of the detection presets: which detector and backbone a preset implies, and whether
it trains on the user's own data. The presets themselves are `autoloss.detection.presets.PROXY_PRESETS`
(imported lazily: it loads torch)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from autoloss.data_specs import is_generated
from autoloss.errors import AutolossError

if TYPE_CHECKING:
    from autoloss.search.config import SearchConfig


class PresetError(AutolossError, ValueError):
    """An unknown preset, or a preset used without what it needs (its COCO data)."""


def preset_config(name: str) -> Any:
    """The detection layer's ExperimentConfig named `name` (PresetError for an unknown name)."""
    from autoloss.detection.presets import PROXY_PRESETS

    if name not in PROXY_PRESETS:
        raise PresetError(f"unknown preset {name!r}; presets: {', '.join(PROXY_PRESETS)} (autoloss presets)")
    return PROXY_PRESETS[name]


def preset_detector(name: str) -> str:
    return preset_config(name).detector


def check_preset(cfg: SearchConfig) -> None:
    name = cfg.proxy.preset
    if not is_generated(preset_config(name).data) and is_generated(cfg.proxy.data):
        raise PresetError(
            f"preset {name!r} trains on your own COCO data: pass --data TRAIN.json "
            "(and --val-data VAL.json with --images / --val-images for COCO's two-file layout)"
        )


def resolve_proxy(cfg: SearchConfig) -> SearchConfig:
    """`cfg` with the proxy's detector and backbone written out from its preset where left unset, so the
    run directory's config says what was trained."""
    p = cfg.proxy
    if p.detector is not None and p.backbone is not None:
        return cfg
    base = preset_config(p.preset)
    proxy = dataclasses.replace(p, detector=p.detector or base.detector, backbone=p.backbone or base.backbone)
    return dataclasses.replace(cfg, proxy=proxy)
