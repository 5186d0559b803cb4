"""COCO box mAP of detections on a split, with faster-coco-eval (pycocotools' API).

Evaluation is in the images' original coordinates against the dataset's own annotations: detections are
mapped back from the detector's frame, crowd regions are ignore areas and the small/medium/large ranges
read each annotation's `area`, so the numbers are the ones pycocotools gives on the original files.
(Generated shapes are born in the detector's frame; their original is that frame.) A metric COCO cannot
compute (no ground truth in that area range) is reported as -1.0, COCO's own convention.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from autoloss.detection.data import Split

METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_ground_truth(data: Split) -> dict[str, Any]:
    """The split's ground truth as a COCO instances dict, in the images' original coordinates."""
    return data.ground_truth()


def detections_to_coco(
    detections: list[dict[str, np.ndarray]], data: Split | None = None
) -> list[dict[str, Any]]:
    """Per-image {"boxes" xyxy, "scores", "labels"} in the detector's frame as COCO result records.

    With `data`, image i's detections are mapped to that split's original image ids, pixels and category
    ids (`Split.to_original`); without it, image i has id i+1 and labels are the category ids.
    """
    records = []
    for i, det in enumerate(detections):
        if data is None:
            image_id, boxes, labels = i + 1, det["boxes"], det["labels"]
        else:
            image_id, boxes, labels = data.to_original(i, det["boxes"], det["labels"])
        for box, score, label in zip(boxes.tolist(), det["scores"].tolist(), labels.tolist(), strict=True):
            records.append(
                {
                    "image_id": int(image_id),
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
    if not results or not any(not a.get("iscrowd", 0) for a in ground_truth["annotations"]):
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
