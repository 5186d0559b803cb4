"""Data at scale: memory of a short training on a 20,000-image COCO JSON against a 200-image one, and
the streaming loader's training throughput against the in-memory path on the tiny proxy.

    .venv/bin/python bench/data.py                  # about 3 minutes (writing 20,000 images is most of it)
    .venv/bin/python bench/data.py --images 2000    # a quicker look

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
    streamed = load_dataset(str(path), str(root / "stream" / "images"), image_size=SIZE, val_fraction=0.01)
    train = TrainConfig(**{**cfg.train.__dict__, "iterations": iterations})
    rates: dict[str, list[float]] = {"in memory": [], "streamed (0 loader workers)": []}
    for _ in range(rounds):
        for label, split in (("in memory", memory.train), ("streamed (0 loader workers)", streamed.train)):
            detector = build_detector("fcos", 5, "tiny", image_size=SIZE, seed=0)
            outcome = train_detector(detector, split, train, seed=0)
            rates[label].append(train.batch_size * outcome.iterations / outcome.seconds)
    return rates


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000, help="the large training set")
    parser.add_argument("--small", type=int, default=200, help="the small training set")
    parser.add_argument("--iterations", type=int, default=20, help="iterations of the memory trainings")
    parser.add_argument("--throughput-iterations", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
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
