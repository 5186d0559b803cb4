"""Data at scale: memory of a short training on a 20,000-image COCO JSON against a 200-image one, and
the streaming loader's training throughput against the in-memory path on the tiny proxy; with
`--train2017`, what loading an annotation file the size of COCO train2017 costs a worker.

    .venv/bin/python bench/data.py                  # about 3 minutes (writing 20,000 images is most of it)
    .venv/bin/python bench/data.py --images 2000    # a quicker look
    .venv/bin/python bench/data.py --train2017 [--before REV] [--json PATH]

`--train2017` generates (once; `--json` keeps it) a COCO instances JSON with train2017's counts: 118,287
images, 860,001 boxes in 80 categories, each with a polygon of 12-40 points as COCO's, about 450 MB. No
image files: it measures the annotations. Each load runs in a fresh process and does what a search's worker
does before its first step: load the file, carve search-val out of it (COCO's two-file layout), draw the
paper's 10,000-image training subset and build that subset's boxes. Peak RSS (VmHWM) and wall time of a
cold load (empty cache: the parse) and a warm one (the cache built by the cold one), and with `--before REV`
the same load with the package imported from a git worktree of REV, in the same run.

Each training runs in a fresh process (peak RSS is per process: /proc/self/status VmHWM). Both trainings
validate on the same 50-image JSON, so the difference is what the training set costs. Throughput: the same
generated images, once in memory (`shapes`) and once written as PNG files and read back through the COCO
path, trained alternately in this process. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import describe as describe_machine

SIZE = 128  # the proxies' image size: letterboxing a 128 px square is the identity


def write_dataset(folder: Path, count: int, split: str, first_id: int = 1) -> Path:
    """`count` generated shapes images as a COCO JSON plus PNGs, in chunks (the parent stays small)."""
    from autoloss.detection.coco_write import write_coco
    from autoloss.detection.shapes import generate_shapes

    parts = []
    chunk = 2000
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        # A fresh seed per chunk: distinct images without generating (and holding) all of them at once.
        data = generate_shapes(split, n, SIZE, seed=start)
        path = write_coco(data, folder / f"part{start}.json", folder / "images", first_id=first_id + start)
        parts.append(json.loads(path.read_text()))
        path.unlink()
    merged = {"images": [], "annotations": [], "categories": parts[0]["categories"]}
    for part in parts:
        offset = len(merged["annotations"])
        for ann in part["annotations"]:
            ann["id"] += offset
        merged["images"] += part["images"]
        merged["annotations"] += part["annotations"]
    out = folder / f"{split}.json"
    out.write_text(json.dumps(merged))
    return out


def child(train_json: str, val_json: str, iterations: int) -> None:
    """One short training on `train_json` (images read from disk); prints its peak RSS and time as JSON."""
    from autoloss.detection import ExperimentConfig, TrainConfig, run_experiment

    cfg = ExperimentConfig(
        data=train_json,
        images=str(Path(train_json).parent / "images"),
        val_data=val_json,
        val_images=str(Path(val_json).parent / "images"),
        image_size=SIZE,
        train=TrainConfig(iterations=iterations, batch_size=8, warmup_iters=5),
    )
    start = time.perf_counter()
    result, _ = run_experiment(cfg)
    peak_mib = _peak_rss_mib()
    print(json.dumps({"status": result.status, "rss_mib": peak_mib, "seconds": time.perf_counter() - start}))


def _peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that across
    exec, so a child of a large parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(root: Path, counts: list[int], iterations: int) -> list[dict]:
    val = write_dataset(root / "val", 50, "val", first_id=10_000_000)
    rows = []
    for count in counts:
        train = write_dataset(root / f"train{count}", count, "train")
        cmd = [sys.executable, __file__, "--child", str(train), str(val), str(iterations)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ})
        rows.append({"images": count, **json.loads(out.stdout.strip().splitlines()[-1])})
    return rows


def measure_throughput(root: Path, iterations: int, rounds: int) -> dict[str, list[float]]:
    """Training images/s of the fcos-shapes recipe, in memory vs streamed from PNG files."""
    import torch

    from autoloss.detection import build_detector, load_dataset
    from autoloss.detection.coco_write import write_coco
    from autoloss.detection.presets import preset
    from autoloss.detection.train import TrainConfig, train_detector

    torch.set_num_threads(1)
    cfg = preset("fcos-shapes")
    memory = load_dataset("shapes", image_size=SIZE, train_size=cfg.train_size, val_size=10)
    path = write_coco(memory.train, root / "stream" / "train.json", root / "stream" / "images")
    streamed = load_dataset(str(path), str(root / "stream" / "images"), image_size=SIZE)
    train = TrainConfig(**{**cfg.train.__dict__, "iterations": iterations})
    rates: dict[str, list[float]] = {"in memory": [], "streamed (0 loader workers)": []}
    for _ in range(rounds):
        for label, split in (("in memory", memory.train), ("streamed (0 loader workers)", streamed.train)):
            detector = build_detector("fcos", 5, "tiny", image_size=SIZE, seed=0)
            outcome = train_detector(detector, split, train, seed=0)
            rates[label].append(train.batch_size * outcome.iterations / outcome.seconds)
    return rates


TRAIN2017 = {"images": 118_287, "boxes": 860_001, "categories": 80}


def write_train2017(path: Path, seed: int = 0) -> None:
    """A COCO instances JSON with train2017's counts and record shapes (polygons included), streamed to
    disk image by image so the generator itself stays small."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n_images, n_boxes = TRAIN2017["images"], TRAIN2017["boxes"]
    per_image = rng.multinomial(n_boxes, np.full(n_images, 1 / n_images))
    with path.open("w", encoding="utf-8") as fh:
        fh.write('{"info": {"description": "generated, train2017-sized"}, "images": [')
        for i in range(n_images):
            fh.write(",\n" if i else "\n")
            fh.write(
                f'{{"license": 1, "file_name": "{i + 1:012d}.jpg", "coco_url": "", "height": 480, '
                f'"width": 640, "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "id": {i + 1}}}'
            )
        fh.write('], "annotations": [')
        ann_id = 0
        for i in range(n_images):
            for _ in range(per_image[i]):
                x, y = rng.uniform(0, 500, 2)
                w, h = rng.uniform(2, 140, 2)
                k = int(rng.integers(12, 41))
                points = rng.uniform(0, 1, 2 * k) * np.tile([w, h], k) + np.tile([x, y], k)
                poly = ",".join(f"{v:.2f}" for v in points)
                fh.write(",\n" if ann_id else "\n")
                ann_id += 1
                fh.write(
                    f'{{"segmentation": [[{poly}]], "area": {w * h * 0.6:.4f}, "iscrowd": 0, '
                    f'"image_id": {i + 1}, "bbox": [{x:.2f}, {y:.2f}, {w:.2f}, {h:.2f}], '
                    f'"category_id": {int(rng.integers(1, TRAIN2017["categories"] + 1))}, "id": {ann_id}}}'
                )
        cats = ", ".join(
            f'{{"supercategory": "s", "id": {c}, "name": "class{c}"}}'
            for c in range(1, TRAIN2017["categories"] + 1)
        )
        fh.write(f'], "categories": [{cats}]}}')


def load_child(json_path: str) -> None:
    """One worker's load (see the module docstring); prints a JSON line: seconds, peak RSS, counts."""
    import autoloss
    from autoloss.detection.coco_json import carve_val, subset_indices
    from autoloss.detection.data import DataReport

    start = time.perf_counter()
    report = DataReport()
    try:
        from autoloss.detection.coco_cache import load_coco

        source = load_coco(json_path, report)
    except ImportError:  # before the cache existed: every worker parsed the JSON
        from autoloss.detection.coco_json import read_coco_json

        source = read_coco_json(json_path, report)
    train, val = carve_val(source, seed=0)
    subset = subset_indices(train, 10_000, seed=0)
    if hasattr(source, "boxes"):
        boxes = sum(len(source.boxes(i)) for i in subset)
    else:
        boxes = sum(len(source.images[i].boxes) for i in subset)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_mib": _peak_rss_mib(),
                "train": len(train),
                "val": len(val),
                "subset_boxes": boxes,
                "package": str(Path(autoloss.__file__).parent),
            }
        )
    )


def measure_train2017(json_path: Path, before: str | None) -> list[tuple[str, dict]]:
    def load(label: str, env: dict[str, str]) -> tuple[str, dict]:
        cmd = [sys.executable, __file__, "--load-child", str(json_path)]
        out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
        return label, json.loads(out.strip().splitlines()[-1])

    rows = []
    with tempfile.TemporaryDirectory(prefix="autoloss-bench-cache-") as cache:
        env = {**os.environ, "AUTOLOSS_CACHE": cache}
        if before:
            with tempfile.TemporaryDirectory() as tmp:
                tree = Path(tmp) / "before"
                root = Path(__file__).resolve().parent.parent
                subprocess.run(
                    ["git", "-C", str(root), "worktree", "add", "--detach", str(tree), before], check=True
                )
                try:
                    rows.append(load(f"before ({before})", {**env, "PYTHONPATH": str(tree / "src")}))
                finally:
                    subprocess.run(
                        ["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=True
                    )
        rows.append(load("cold (parse, then cache)", env))
        rows.append(load("warm (memory-mapped cache)", env))
        rows.append(load("warm, again", env))
    return rows


def train2017_command(json_arg: str | None, before: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="autoloss-bench-train2017-") as tmp:
        json_path = Path(json_arg) if json_arg else Path(tmp) / "instances_train2017.json"
        if not json_path.is_file():
            start = time.perf_counter()
            write_train2017(json_path)
            took = time.perf_counter() - start
            print(f"wrote {json_path} ({json_path.stat().st_size / 2**20:.0f} MiB) in {took:.0f} s")
        size = json_path.stat().st_size / 2**20
        rows = measure_train2017(json_path, before)
    print(f"## COCO train2017-sized annotations ({time.strftime('%Y-%m-%d')})\n")
    counts = f"{TRAIN2017['images']:,} images, {TRAIN2017['boxes']:,} boxes with polygons"
    print(f"Machine: {describe_machine()}. JSON: {counts}, {size:.0f} MiB.\n")
    print("| load (one worker process) | seconds | peak RSS (MiB) | train / search-val | boxes, 10k subset |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        split = f"{r['train']:,} / {r['val']:,}"
        print(f"| {label} | {r['seconds']:.1f} | {r['rss_mib']:.0f} | {split} | {r['subset_boxes']:,} |")
    print("\nTargets: <= 1 GiB per worker, <= 30 s cold, <= 2 s warm.")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--load-child":
        load_child(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="the large training set")
    parser.add_argument("--small", type=int, default=200, help="the small training set")
    parser.add_argument("--iterations", type=int, default=20, help="iterations of the memory trainings")
    parser.add_argument("--throughput-iterations", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train2017", action="store_true", help="measure a train2017-sized JSON's load")
    parser.add_argument("--before", help="with --train2017: a git revision to measure first, from a worktree")
    parser.add_argument("--json", help="with --train2017: the generated JSON (written if missing, then kept)")
    args = parser.parse_args()
    if args.train2017:
        train2017_command(args.json, args.before)
        return
    with tempfile.TemporaryDirectory(prefix="autoloss-bench-data-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        memory = measure_memory(root, [args.small, args.images], args.iterations)
        rates = measure_throughput(root, args.throughput_iterations, args.rounds)
        took = time.perf_counter() - start
    small, large = memory
    print(f"## Data at scale ({time.strftime('%Y-%m-%d')})\n\nMachine: {describe_machine()}; {took:.0f} s.\n")
    what = f"{args.iterations}-iteration training (FCOS-tiny, batch 8, {SIZE} px)"
    print(f"Peak RSS of a {what}, one process:\n")
    print("| training images | peak RSS (MiB) | seconds | status |\n|---|---|---|---|")
    for row in memory:
        print(f"| {row['images']:,} | {row['rss_mib']:.0f} | {row['seconds']:.1f} | {row['status']} |")
    print(f"\nRatio large / small: {large['rss_mib'] / small['rss_mib']:.2f} (target <= 1.5)\n")
    print(f"Training throughput, fcos-shapes recipe, {args.throughput_iterations} iterations, one thread:\n")
    print("| data path | images/s (median of rounds) | rounds |\n|---|---|---|")
    for label, values in rates.items():
        print(f"| {label} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    labels = list(rates)
    ratio = statistics.median(rates[labels[1]]) / statistics.median(rates[labels[0]])
    print(f"\nRatio streamed / in memory: {ratio:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
