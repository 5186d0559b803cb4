"""The prepared GPU check (run by bench/gpu_check.sh, at most 8 minutes on one GPU).

FCOS-R50 on a COCO-format set written to disk (generated shapes, random crops, keep-aspect resize):
1. the seam's step time vs the stock loss, AMP off and bf16;
2. a short training with AMP off vs bf16 (seconds, AP);
3. two process workers sharing one GPU vs one (trainings per minute);
4. a two-trial Ray run with --gpus-per-trial 0.5.
Writes gpu_check.json and gpu_check.md to the output folder; every section records its error instead
of ending the check, so a partial result still comes back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from machine import describe as describe_machine

ROOT = Path(__file__).resolve().parents[1]


def make_data(folder: Path, n_train: int, n_val: int) -> dict[str, str]:
    from autoloss.detection.coco_write import write_coco
    from autoloss.detection.shapes import generate_shapes

    train = write_coco(
        generate_shapes("train", n_train, 512, 0), folder / "train.json", folder / "tr", crop=True
    )
    val = write_coco(
        generate_shapes("val", n_val, 512, 0), folder / "val.json", folder / "va", crop=True, seed=1
    )
    return {
        "data": str(train),
        "images": str(folder / "tr"),
        "val_data": str(val),
        "val_images": str(folder / "va"),
    }


def experiment(data: dict[str, str], **train: Any):
    from autoloss.detection import ExperimentConfig, TrainConfig

    settings = {"iterations": 100, "batch_size": 8, "lr": 0.01, "warmup_iters": 20, "device": "cuda"}
    settings.update(train)
    return ExperimentConfig(
        detector="fcos",
        backbone="resnet50",
        resize="keep-aspect",
        min_size=512,
        max_size=683,
        train=TrainConfig(threads=4, loader_workers=4, **settings),
        **data,
    )


def seam_step_times(data: dict[str, str], amp: str, steps: int = 20) -> dict[str, float]:
    """Median forward+backward ms of one batch, stock loss vs focal + GIoU through the seam."""
    from autoloss.detection.loader import batch_of
    from autoloss.detection.runner import build_for, load_experiment_data
    from autoloss.loss import Loss

    cfg = experiment(data)
    split = load_experiment_data(cfg)
    stock = build_for(cfg, split, None, None).cuda().train()
    routed = build_for(cfg, split, Loss.named("focal"), Loss.named("giou")).cuda().train()
    routed.load_state_dict(stock.state_dict())
    images, targets = batch_of(split.train, list(range(8)), "cuda")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    times: dict[str, list[float]] = {"stock": [], "seam": []}
    for i in range(steps + 3):
        for name, model in (
            (("stock", stock), ("seam", routed)) if i % 2 else (("seam", routed), ("stock", stock))
        ):
            model.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                losses = model(images, targets)
            sum(v.float() for v in losses.values()).backward()
            torch.cuda.synchronize()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    stock_ms, seam_ms = (statistics.median(times[k]) * 1e3 for k in ("stock", "seam"))
    return {"stock_ms": stock_ms, "seam_ms": seam_ms, "ratio": seam_ms / stock_ms}


def amp_trainings(data: dict[str, str]) -> dict[str, Any]:
    from autoloss.detection import run_experiment

    out = {}
    for amp in ("off", "bf16"):
        result, _ = run_experiment(experiment(data, amp=amp))
        out[amp] = {"status": result.status, "seconds": result.train_seconds, "AP": result.metrics.get("AP")}
    return out


def trial_of(exp: Any, seed: int) -> dict[str, Any]:
    """What the search sends a worker for one training of `exp` (an ExperimentConfig) with `seed`."""
    import dataclasses

    from autoloss.detection.task import DetectionTask, schedule_of
    from autoloss.evolution.work import trial_spec

    schedule = dataclasses.replace(schedule_of(exp), seed=seed)
    return trial_spec("detection", DetectionTask(exp).config(), schedule)


def shared_gpu(data: dict[str, str], trainings: int = 4) -> dict[str, Any]:
    """Wall time of `trainings` short trainings on one worker vs two workers sharing the GPU."""
    from autoloss.evolution.work import proxy_task
    from autoloss.executors import make_executor

    exp = experiment(data, iterations=60, loader_workers=2)
    out = {}
    for per_gpu in (1, 2):
        executor = make_executor("process", device="cuda", workers_per_gpu=per_gpu)
        try:
            start = time.perf_counter()
            futures = [
                executor.submit(proxy_task, trial_of(exp, s), "default", "default") for s in range(trainings)
            ]
            statuses = [f.result(timeout=400)["status"] for f in futures]
            out[f"{per_gpu} per GPU"] = {"seconds": time.perf_counter() - start, "statuses": statuses}
        finally:
            executor.shutdown()
    one, two = out["1 per GPU"]["seconds"], out["2 per GPU"]["seconds"]
    out["speedup"] = one / two
    return out


def ray_half_gpus(data: dict[str, str]) -> dict[str, Any]:
    from autoloss.evolution.work import proxy_task
    from autoloss.executors import make_executor

    exp = experiment(data, iterations=30, loader_workers=0)
    executor = make_executor("ray", 2, device="cuda", gpus_per_trial=0.5, cpus_per_trial=2)
    try:
        start = time.perf_counter()
        futures = [executor.submit(proxy_task, trial_of(exp, s), "bce", "giou") for s in range(2)]
        results = [f.result(timeout=400) for f in futures]
    finally:
        executor.shutdown()
    return {"seconds": time.perf_counter() - start, "statuses": [r["status"] for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--train-images", type=int, default=400)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; nothing to check", file=sys.stderr)
        sys.exit(2)
    report: dict[str, Any] = {"machine": describe_machine(), "gpu": torch.cuda.get_device_name(0)}
    with tempfile.TemporaryDirectory(prefix="autoloss-gpu-") as tmp:
        data = make_data(Path(tmp), args.train_images, 100)
        sections = {
            "seam step, amp off": lambda: seam_step_times(data, "off"),
            "seam step, amp bf16": lambda: seam_step_times(data, "bf16"),
            "training, amp off vs bf16": lambda: amp_trainings(data),
            "two workers sharing one GPU": lambda: shared_gpu(data),
            "ray, 2 trials at 0.5 GPU": lambda: ray_half_gpus(data),
        }
        for name, run in sections.items():
            start = time.perf_counter()
            try:
                report[name] = run()
            except Exception as exc:  # a failed section is a finding; the others still run
                report[name] = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc(limit=8),
                }
            report[name]["section_seconds"] = time.perf_counter() - start
            (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
            print(f"{name}: {json.dumps(report[name], default=str)[:400]}", flush=True)
    lines = [f"# GPU check ({time.strftime('%Y-%m-%d')})", "", f"{report['gpu']}; {report['machine']}", ""]
    lines += [
        f"- **{k}**: `{json.dumps(v, default=str)[:600]}`" for k, v in report.items() if isinstance(v, dict)
    ]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
