"""COCO box mAP of detections on a `DetectionData` split, with faster-coco-eval (pycocotools' API).

Areas (small/medium/large) are measured in the letterboxed frame the detector sees. A metric COCO cannot
compute (no ground truth in that area range) is reported as -1.0, COCO's own convention.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from autoloss.detection.data import DetectionData

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_ground_truth(data: DetectionData) -> dict[str, Any]:
    """The split as a COCO instances dict; image ids are 1-based positions, category ids the labels."""
    images, annotations = [], []
    size = data.image_size
    for i, (boxes, labels) in enumerate(zip(data.boxes, data.labels, strict=True)):
        images.append({"id": i + 1, "width": size, "height": size, "file_name": f"{i + 1}.png"})
        for box, label in zip(boxes.tolist(), labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(data.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detections_to_coco(detections: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    """Per-image {"boxes" xyxy, "scores", "labels"} (image i has id i+1) as COCO result records."""
    records = []
    for i, det in enumerate(detections):
        for box, score, label in zip(
            det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True
        ):
            records.append(
                {
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": float(score),
                }
            )
    return records


def coco_map(
    ground_truth: dict[str, Any], results: list[dict[str, Any]], backend: str = "faster_coco_eval"
) -> dict[str, float]:
    """AP, AP50, AP75, APs, APm, APl. `backend` "pycocotools" exists to cross-check the numbers."""
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval

        quiet: dict[str, Any] = {"print_function": _silent}
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        quiet = {}
    else:
        raise ValueError(f"unknown COCO eval backend {backend!r}")
    if not results or not ground_truth["annotations"]:
        # COCO's loadRes rejects an empty result list; no detections (or nothing to find) scores zero.
        return dict.fromkeys(METRIC_NAMES, 0.0)
    gt = COCO(**quiet) if quiet else COCO()
    gt.dataset = ground_truth
    _silently(gt.createIndex)
    dt = _silently(gt.loadRes, results)
    evaluator = COCOeval(gt, dt, "bbox", **quiet)
    _silently(evaluator.evaluate)
    _silently(evaluator.accumulate)
    _silently(evaluator.summarize)
    return {name: float(v) for name, v in zip(METRIC_NAMES, evaluator.stats[:6], strict=True)}


def _silent(*args: object, **kwargs: object) -> None:
    """COCO tools report progress by printing; a library must not."""


def _silently(fn: Any, *args: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)
