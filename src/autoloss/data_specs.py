"""Dataset specs as users write them: a built-in generated dataset by name, or a COCO JSON path.

Kept apart from the detection layer (which imports torch) so that configuration checks and the CLI can
tell the two apart without loading anything heavy.
"""

from __future__ import annotations

# The generated datasets (detection/shapes.py draws them): names, not files.
GENERATED = ("shapes", "shapes-dense")


def is_generated(spec: str) -> bool:
    """Whether a dataset spec names a built-in generated dataset (rather than a COCO JSON file)."""
    return spec in GENERATED
