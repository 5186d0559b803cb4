"""Proxy-task benchmark: seam overhead, proxy throughput, and (with --map) mAP of losses over seeds.

    .venv/bin/python bench/proxy.py                # step times + images/s (about a minute)
    .venv/bin/python bench/proxy.py --map          # + mAP tables (default vs CSE-Autoloss vs a poor loss)

Ratios are measured side by side in one run (stock and routed steps interleaved on the same weights and
batch), because the machines are shared and noisy. Prints Markdown for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from autoloss.detection import build_detector, evaluate_losses, preset
from autoloss.detection.loader import batch_of
from autoloss.detection.shapes import generate_shapes
from autoloss.detection.train import TrainConfig, train_detector
from autoloss.loss import Loss
from machine import describe as describe_machine

MICRO = (
    Path(__file__).resolve().parents[2] / "shared" / "datasets" / "microcontrollers" / "annotations.coco.json"
)
ROUTED = {
    # the stock loss, expressed as compiled expressions and routed through the seam
    "fcos": ("focal", "giou"),
    "retinanet": ("focal", "giou"),
    "faster_rcnn": ("ce", None),  # the stock reg loss is smooth L1 on deltas: no I/U/E expression
}


def step_times(name: str, steps: int, batch: int) -> tuple[float, float]:
    """Median training-step seconds (forward + backward) for stock vs routed losses, interleaved."""
    cls, reg = ROUTED[name]
    stock = build_detector(name, 5, seed=0).train()
    routed = build_detector(
        name, 5, seed=0, cls_loss=Loss.named(cls), reg_loss=Loss.named(reg) if reg else None
    ).train()
    routed.load_state_dict(stock.state_dict())
    data = generate_shapes("train", batch, 128, seed=0)
    images, targets = batch_of(data, list(range(batch)))
    times: dict[str, list[float]] = {"stock": [], "routed": []}
    for i in range(steps + 2):
        for key, model in (
            (("stock", stock), ("routed", routed)) if i % 2 else (("routed", routed), ("stock", stock))
        ):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(i)  # the RoI sampler: same draws for both
            start = time.perf_counter()
            sum(model(images, targets).values()).backward()
            if i >= 2:  # the first steps warm up allocators and oneDNN kernels
                times[key].append(time.perf_counter() - start)
    return statistics.median(times["stock"]), statistics.median(times["routed"])


def proxy_throughput(iterations: int) -> tuple[float, float]:
    """Images per second of the fcos-shapes preset's training loop, and the projected seconds per run."""
    cfg = preset("fcos-shapes")
    data = generate_shapes("train", cfg.train_size, cfg.image_size, seed=cfg.data_seed)
    detector = build_detector(cfg.detector, 5, cfg.backbone, image_size=cfg.image_size, seed=0)
    short = TrainConfig(**{**cfg.train.__dict__, "iterations": iterations})
    outcome = train_detector(detector, data, short, seed=0)
    per_iter = outcome.seconds / outcome.iterations
    return cfg.train.batch_size / per_iter, per_iter * cfg.train.iterations


def _one_run(job: tuple[str, dict, str | None, str | None, dict, int]) -> dict:
    label, overrides, cls, reg, extra, seed = job
    result = evaluate_losses(cls, reg, seed=seed, **overrides, **extra)
    return {"label": label, "seed": seed, "status": result.status, "ap": result.ap, "seconds": result.seconds}


def map_table(title: str, overrides: dict, losses: dict, seeds: list[int], workers: int) -> list[str]:
    # losses: label -> (cls, reg, extra overrides such as a loss weight)
    jobs = [(label, overrides, *spec, seed) for label, spec in losses.items() for seed in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        runs = list(pool.map(_one_run, jobs))
    lines = [
        f"\n### {title}\n",
        "| losses (cls + reg) | AP mean ± std | per seed | s/run |",
        "|---|---|---|---|",
    ]
    for label in losses:
        mine = [r for r in runs if r["label"] == label]
        aps = [r["ap"] for r in mine]
        std = statistics.stdev(aps) if len(aps) > 1 else 0.0
        bad = [r["status"] for r in mine if r["status"] != "ok"]
        seconds = statistics.mean(r["seconds"] for r in mine)
        per_seed = ", ".join(f"{a:.3f}" for a in aps) + (f" ({', '.join(bad)})" if bad else "")
        lines.append(f"| {label} | {statistics.mean(aps):.3f} ± {std:.3f} | {per_seed} | {seconds:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", action="store_true", help="also train the mAP tables (minutes)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per detector and variant")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="parallel single-thread trainings")
    parser.add_argument("--micro-iterations", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)

    out = [
        f"## Proxy task ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {describe_machine()}; one thread per run.",
        "",
    ]
    out += [
        "### Seam overhead: one training step, batch 8 at 128 px, tiny backbone",
        "",
        "| detector | stock loss (ms) | same loss as compiled expressions through the seam (ms) | ratio |",
        "|---|---|---|---|",
    ]
    for name in ROUTED:
        stock, routed = step_times(name, args.steps, 8)
        routed_what = " + ".join(x for x in ROUTED[name] if x)
        out.append(
            f"| {name} ({routed_what}) | {stock * 1e3:.1f} | {routed * 1e3:.1f} | {routed / stock:.3f} |"
        )
    print("\n".join(out), flush=True)
    images_per_s, projected = proxy_throughput(60)
    iterations = preset("fcos-shapes").train.iterations
    print(
        f"\nProxy preset fcos-shapes: {images_per_s:.0f} training images/s on one thread; "
        f"{projected:.0f} s projected for its {iterations} iterations (+ ~2 s eval)",
        flush=True,
    )
    if not args.map:
        return
    seeds = list(range(args.seeds))
    shapes_losses = {
        "default (focal + GIoU)": (None, None, {}),
        "CSE-Autoloss-B (cse-b-cls + cse-b-reg)": ("cse-b-cls", "cse-b-reg", {}),
        "bce + GIoU": ("bce", None, {}),
        "poor: default with reg weight 0.1": (None, None, {"reg_weight": 0.1}),
    }
    title = "FCOS-tiny, shapes 128 px (preset fcos-shapes)"
    print("\n".join(map_table(title, {}, shapes_losses, seeds, args.workers)), flush=True)
    if MICRO.exists():
        micro = {
            "data": str(MICRO),
            "image_size": 256,
            "train": {"iterations": args.micro_iterations, "batch_size": 8},
        }
        micro_losses = {k: shapes_losses[k] for k in list(shapes_losses)[:2]}
        title = f"FCOS-tiny, microcontrollers 256 px, {args.micro_iterations} iterations of batch 8"
        print("\n".join(map_table(title, micro, micro_losses, seeds, args.workers)), flush=True)


if __name__ == "__main__":
    main()
