"""`DETECTOR:DATA:SIZE:ITERATIONS`: one training protocol in one string, the form `--proxy-task` (search),
`--proxy` / `--target` (fidelity) take. One parser for all of them.

DETECTOR is fcos, retinanet or faster_rcnn; DATA a dataset name (`autoloss data list`, shapes,
shapes-dense) or a COCO annotations JSON (it may contain ':'); SIZE the letterboxed image size (a multiple
of 32) or `native` (the dataset's own default); ITERATIONS the rung-0 length.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoloss.data_specs import data_names, is_known_data
from autoloss.tasks.protocol import TaskError

DETECTORS = ("fcos", "retinanet", "faster_rcnn")


@dataclass(frozen=True)
class TaskText:
    """A parsed `DETECTOR:DATA:SIZE:ITERATIONS`."""

    detector: str
    data: str
    image_size: int | None
    iterations: int

    def settings(self) -> dict[str, object]:
        """The detection task's settings this text overrides."""
        return {"detector": self.detector, "data": self.data, "image_size": self.image_size}


def parse_task_text(text: str) -> TaskText:
    """Parse `text`; `TaskError` saying what is wrong and what the form is."""
    parts = text.split(":")
    if len(parts) < 4:
        raise TaskError(f"task {text!r} must read DETECTOR:DATA:SIZE:ITERATIONS, e.g. fcos:bccd:256:300")
    detector, size, iters = parts[0], parts[-2], parts[-1]
    data = ":".join(parts[1:-2])
    if detector not in DETECTORS:
        raise TaskError(f"task {text!r}: unknown detector {detector!r}; detectors: {', '.join(DETECTORS)}")
    if not is_known_data(data):
        raise TaskError(
            f"task {text!r}: dataset {data!r} is neither a dataset name ({data_names()}) nor an existing "
            "COCO JSON file"
        )
    try:
        image_size = None if size == "native" else int(size)
        iterations = int(iters)
    except ValueError:
        raise TaskError(
            f"task {text!r}: SIZE and ITERATIONS must be integers (SIZE may be 'native')"
        ) from None
    if image_size is not None and (image_size < 32 or image_size % 32):
        raise TaskError(f"task {text!r}: image size must be a positive multiple of 32, got {image_size}")
    if iterations < 1:
        raise TaskError(f"task {text!r}: iterations must be positive, got {iterations}")
    return TaskText(detector, data, image_size, iterations)
