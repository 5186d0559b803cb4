"""Build the built-in real datasets (src/autoloss/builtin_data/<name>/) from their upstream COCO copies.

Usage: python tools/build_builtin_data.py SOURCE_ROOT

SOURCE_ROOT holds one folder per dataset (bccd, microcontrollers, thermal_dogs_people), each with a COCO
`annotations.coco.json` (images carrying a `split` key), its images and its LICENSE. Every image is
resized to a long side of at most 512 px (aspect kept, Pillow LANCZOS) and saved as JPEG quality 85;
boxes and areas are scaled by the same factor, boxes under 1 px after scaling are dropped. The upstream
split labels are kept as they are: the loader decides from them whether to re-split (autoloss.data_specs
describes each set, its licence and its source). Output is deterministic for a given Pillow version.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

LONG_SIDE = 512
QUALITY = 85
OUT_ROOT = Path(__file__).resolve().parent.parent / "src" / "autoloss" / "builtin_data"

# Folder upstream -> built-in name, and the attribution line kept with the data.
SETS = {
    "bccd": (
        "bccd",
        "BCCD (Blood Cell Count and Detection), https://github.com/Shenggan/BCCD_Dataset "
        "(commit d272fb1), MIT licence, Copyright (c) 2017 shenggan; images and labels originally from "
        "cosmicad/dataset and akshaylamba/all_CELL_data.",
    ),
    "microcontrollers": (
        "microcontrollers",
        "Microcontroller detection by Gilbert Tanner, "
        "https://github.com/TannerGilbert/Tensorflow-Object-Detection-API-Train-Model (commit 7388c4d), "
        "MIT licence, Copyright (c) 2019 Gilbert Tanner.",
    ),
    "thermal_dogs_people": (
        "thermal",
        "Thermal Dogs and People v1 (Roboflow, public.roboflow.ai/object-detection/thermal-dogs-and-people), "
        "provided by Joseph Nelson, released into the public domain; taken from a copy in "
        "github.com/JJongSSu/Study (commit afeed51).",
    ),
}


def build(source_root: Path) -> None:
    for folder, (name, attribution) in SETS.items():
        src = source_root / folder
        out = OUT_ROOT / name
        if out.exists():
            shutil.rmtree(out)
        (out / "images").mkdir(parents=True)
        raw = json.loads((src / "annotations.coco.json").read_text(encoding="utf-8"))
        images, annotations, scale_of = [], [], {}
        for img in sorted(raw["images"], key=lambda i: i["id"]):
            with Image.open(src / img["file_name"]) as im:
                im = im.convert("RGB")
                scale = min(1.0, LONG_SIDE / max(im.size))
                size = (round(im.width * scale), round(im.height * scale))
                if scale < 1.0:
                    im = im.resize(size, Image.Resampling.LANCZOS)
                file_name = f"images/{img['id']:05d}.jpg"
                im.save(out / file_name, "JPEG", quality=QUALITY, optimize=True)
            scale_of[img["id"]] = (size[0] / img["width"], size[1] / img["height"])
            images.append(
                {
                    "id": img["id"],
                    "file_name": file_name,
                    "width": size[0],
                    "height": size[1],
                    "split": img["split"],
                    "upstream_file": Path(img["file_name"]).name,
                }
            )
        dropped = 0
        for ann in sorted(raw["annotations"], key=lambda a: a["id"]):
            sx, sy = scale_of[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            box = [round(x * sx, 2), round(y * sy, 2), round(w * sx, 2), round(h * sy, 2)]
            if box[2] < 1 or box[3] < 1:
                dropped += 1
                continue
            annotations.append(
                {
                    "id": ann["id"],
                    "image_id": ann["image_id"],
                    "category_id": ann["category_id"],
                    "bbox": box,
                    "area": round(box[2] * box[3], 2),
                    "iscrowd": int(ann.get("iscrowd", 0)),
                }
            )
        categories = [{"id": c["id"], "name": c["name"]} for c in raw["categories"]]
        doc = {"images": images, "annotations": annotations, "categories": categories}
        (out / "annotations.coco.json").write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
        card = src / "README.dataset.txt"
        if card.exists():
            # A Roboflow export: the dataset's own licence is stated in its card (the LICENSE beside it
            # covers the repository it was copied from, not the images), so the card is the licence.
            shutil.copy(card, out / "README.dataset.txt")
            line = next(t for t in card.read_text(encoding="utf-8").splitlines() if t.startswith("License:"))
            (out / "LICENSE").write_text(f"{line}\n(as stated in README.dataset.txt, the dataset card)\n")
        else:
            shutil.copy(src / "LICENSE", out / "LICENSE")
        (out / "ATTRIBUTION.txt").write_text(
            f"{attribution}\nResized to a long side of at most {LONG_SIDE} px (JPEG quality {QUALITY}) for "
            f"autoloss; boxes scaled alike ({dropped} under 1 px dropped). Upstream image ids and split "
            "labels kept; `upstream_file` in the JSON names each image's upstream file.\n",
            encoding="utf-8",
        )
        print(f"{name}: {len(images)} images, {len(annotations)} boxes, {dropped} dropped")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build(Path(sys.argv[1]))
