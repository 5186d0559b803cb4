"""Load MMDetection's own loss code for conformance tests without executing `mmdet/__init__.py`.

MMDetection 3.3 does not import on a CPU-only machine (mmcv imports cv2 and its compiled ops), but the loss
files the export is compared with are pure torch. `load_mmdet()` executes only those files, under stub
parent packages whose `__path__` points at the real folders, with `mmcv.ops.sigmoid_focal_loss` a placeholder
(its CUDA-only path is never taken on CPU tensors). Every stub is removed from `sys.modules` afterwards, so no
other test sees them; the loaded functions keep their own globals and work on.

Needs mmengine (with its pure-python deps yapf, addict, termcolor) and the mmdet 3.x source tree.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from typing import Any

STUBBED = ("mmdet", "mmcv")  # top-level names whose sys.modules entries the loader replaces, then restores


class MMDetUnavailable(RuntimeError):
    """MMDetection's loss code cannot be loaded here; the message says why (tests skip with it)."""


@dataclass(frozen=True)
class MMDet:
    weight_reduce_loss: Any
    GIoULoss: Any
    IoULoss: Any
    FocalLoss: Any
    py_sigmoid_focal_loss: Any
    Registry: Any
    version: str


def _package(name: str, path: str | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__path__ = [path] if path else []
    module.__package__ = name
    return module


def _placeholder(*args: Any, **kwargs: Any) -> Any:
    raise MMDetUnavailable("mmcv.ops.sigmoid_focal_loss (compiled CUDA op) is a placeholder in these tests")


def load_mmdet() -> MMDet:
    """MMDetection's weight_reduce_loss, GIoULoss, IoULoss, FocalLoss (pure-torch path) and mmengine's
    Registry; raises MMDetUnavailable with the reason when they cannot be loaded."""
    try:
        from mmengine.registry import Registry
    except Exception as exc:  # any failure is a reason to skip
        raise MMDetUnavailable(f"mmengine.registry does not import: {type(exc).__name__}: {exc}") from exc
    spec = importlib.util.find_spec("mmdet")
    if spec is None or not spec.submodule_search_locations:
        raise MMDetUnavailable("mmdet is not installed")
    root = next(iter(spec.submodule_search_locations))
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in STUBBED}
    for k in saved:
        del sys.modules[k]
    try:
        stubs = {
            "mmdet": _package("mmdet", root),
            "mmdet.models": _package("mmdet.models", f"{root}/models"),
            "mmdet.models.losses": _package("mmdet.models.losses", f"{root}/models/losses"),
            "mmdet.structures": _package("mmdet.structures", f"{root}/structures"),
            "mmdet.structures.bbox": _package("mmdet.structures.bbox", f"{root}/structures/bbox"),
            "mmdet.registry": types.ModuleType("mmdet.registry"),
            "mmcv": _package("mmcv"),
            "mmcv.ops": types.ModuleType("mmcv.ops"),
        }
        stubs["mmdet.registry"].MODELS = Registry("mmdet conformance stub")
        stubs["mmcv.ops"].sigmoid_focal_loss = _placeholder
        sys.modules.update(stubs)
        overlaps = importlib.import_module("mmdet.structures.bbox.bbox_overlaps")
        stubs["mmdet.structures.bbox"].bbox_overlaps = overlaps.bbox_overlaps
        utils = importlib.import_module("mmdet.models.losses.utils")
        iou = importlib.import_module("mmdet.models.losses.iou_loss")
        focal = importlib.import_module("mmdet.models.losses.focal_loss")
        version_ns: dict[str, Any] = {}
        with open(f"{root}/version.py", encoding="utf-8") as f:
            exec(compile(f.read(), f"{root}/version.py", "exec"), version_ns)
    except MMDetUnavailable:
        raise
    except Exception as exc:
        raise MMDetUnavailable(f"mmdet's loss files do not load: {type(exc).__name__}: {exc}") from exc
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in STUBBED]:
            del sys.modules[k]
        sys.modules.update(saved)
    return MMDet(
        weight_reduce_loss=utils.weight_reduce_loss,
        GIoULoss=iou.GIoULoss,
        IoULoss=iou.IoULoss,
        FocalLoss=focal.FocalLoss,
        py_sigmoid_focal_loss=focal.py_sigmoid_focal_loss,
        Registry=Registry,
        version=str(version_ns.get("__version__", "?")),
    )
