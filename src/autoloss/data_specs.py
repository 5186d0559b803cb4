"""Dataset specs as users write them: a generated dataset by name, a built-in real dataset by name, or a
COCO JSON path.

Kept apart from the detection layer (which imports torch) so that configuration checks and the CLI can
tell them apart without loading anything heavy.

The built-in real sets are small, permissively licensed detection datasets shipped inside the package
(`autoloss/builtin_data/<name>/`: `annotations.coco.json`, `images/`, `LICENSE`, `ATTRIBUTION.txt`), stored
at a long side of at most 512 px, so that a search runs on real photos on a machine without internet.
`tools/build_builtin_data.py` rebuilds them from the upstream copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The generated datasets (detection/shapes.py draws them): names, not files. For tests and smoke runs:
# they rank losses unlike real photos.
GENERATED = ("shapes", "shapes-dense")


@dataclass(frozen=True)
class BuiltinSet:
    """One built-in real dataset: what it shows, its licence and where it comes from."""

    name: str
    content: str
    licence: str
    source: str


BUILTIN: dict[str, BuiltinSet] = {
    s.name: s
    for s in (
        BuiltinSet(
            "bccd",
            "blood cells in microscope smears (RBC, WBC, platelets); dense, 13 boxes per image",
            "MIT",
            "github.com/Shenggan/BCCD_Dataset",
        ),
        BuiltinSet(
            "microcontrollers",
            "phone photos of 4 kinds of dev boards; 1-4 boxes per image",
            "MIT",
            "github.com/TannerGilbert/Tensorflow-Object-Detection-API-Train-Model",
        ),
        BuiltinSet(
            "thermal",
            "thermal infrared photos of dogs and people; large objects, some images empty",
            "public domain",
            "public.roboflow.ai/object-detection/thermal-dogs-and-people",
        ),
    )
}


def is_generated(spec: str) -> bool:
    """Whether a dataset spec names a built-in generated dataset (rather than a COCO JSON file)."""
    return spec in GENERATED


def is_builtin(spec: str) -> bool:
    """Whether a dataset spec names a built-in real dataset."""
    return spec in BUILTIN


def builtin_folder(name: str) -> Path:
    """The folder of a built-in real dataset (inside the installed package)."""
    return Path(__file__).resolve().parent / "builtin_data" / name


def annotation_file(spec: str) -> str:
    """The COCO JSON a spec reads: a built-in name becomes its packaged file, a path stays as given."""
    return str(builtin_folder(spec) / "annotations.coco.json") if is_builtin(spec) else spec


def is_known_data(spec: str) -> bool:
    """A generated or built-in name, or an existing file."""
    return is_generated(spec) or is_builtin(spec) or Path(spec).is_file()


def data_names() -> str:
    """The dataset names a user may give, for error messages."""
    return ", ".join((*GENERATED, *BUILTIN))
