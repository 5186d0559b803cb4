"""The prepared GPU check (run by bench/gpu_check.sh; at most 5 minutes on one GPU).

1. the published losses' values and gradients, CPU vs GPU (max relative error);
2. the seam's step time against the stock loss (FCOS-R50, keep-aspect 512 px), fp32 and `--amp bf16`;
3. trainings per hour of the default proxy task (the frozen task of bench/training.py) on the GPU;
4. a smoke search through the process backend with loader workers (`autoloss search --budget smoke`);
5. two process workers sharing the GPU against one, and a Ray run at 0.5 GPU per trial (where Ray is
   installed; a GPU machine's own image often lacks it).

`--dry-run` runs every section on the CPU at toy sizes: it checks the script, not the GPU. Each section
records its error instead of ending the check, so a partial result still comes back. Writes
gpu_check.json and gpu_check.md (one markdown table) to `--out`, and prints the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from machine import describe as describe_machine

ROOT = Path(__file__).resolve().parents[1]
# The default proxy task, as bench/training.py freezes it.
PROXY_SETTINGS = {"preset": "fcos-shapes", "data": "bccd", "image_size": 128}
PROXY_ITERATIONS = 300


class Sizes:
    """What each section trains: the GPU check's, or toys for a CPU dry run."""

    def __init__(self, dry_run: bool) -> None:
        self.device = "cpu" if dry_run else "cuda"
        self.backbone = "tiny" if dry_run else "resnet50"
        self.image = 128 if dry_run else 512
        self.train_images, self.val_images = (16, 8) if dry_run else (400, 100)
        self.batch = 2 if dry_run else 8
        self.steps = 2 if dry_run else 20
        self.iterations = 3 if dry_run else 100
        self.proxy_iterations = 5 if dry_run else PROXY_ITERATIONS
        toy_search = [
            "--generations",
            "1",
            "--offspring",
            "40",
            "--proxy-iterations",
            "2",
            "--final-seeds",
            "1",
        ]
        self.search = toy_search if dry_run else []
        self.loader_workers = 1 if dry_run else 2


def make_data(folder: Path, sizes: Sizes) -> dict[str, str]:
    from autoloss.detection.coco_write import write_coco
    from autoloss.detection.shapes import generate_shapes

    def write(split: str, n: int, name: str, seed: int) -> Path:
        data = generate_shapes(split, n, sizes.image, 0)
        return write_coco(data, folder / f"{name}.json", folder / name, crop=True, seed=seed)

    train, val = write("train", sizes.train_images, "tr", 0), write("val", sizes.val_images, "va", 1)
    return {
        "data": str(train),
        "images": str(folder / "tr"),
        "val_data": str(val),
        "val_images": str(folder / "va"),
    }


def experiment(data: dict[str, str], sizes: Sizes, **train: Any):
    from autoloss.detection import ExperimentConfig, TrainConfig

    settings = {
        "iterations": sizes.iterations,
        "batch_size": sizes.batch,
        "lr": 0.01,
        "warmup_iters": min(20, sizes.iterations),
        "device": sizes.device,
        "threads": 4,
        "loader_workers": sizes.loader_workers,
    }
    settings.update(train)
    return ExperimentConfig(
        detector="fcos",
        backbone=sizes.backbone,
        resize="keep-aspect",
        min_size=sizes.image,
        max_size=sizes.image * 4 // 3,
        train=TrainConfig(**settings),
        **data,
    )


def losses_cpu_vs_device(sizes: Sizes) -> dict[str, Any]:
    """Every named loss on the same random inputs in float32 on the CPU and on the device: the largest
    relative difference of the values and of the gradients w.r.t. the prediction input (X or I)."""
    from autoloss.loss import Loss
    from autoloss.spaces.named import NAMED

    g = torch.Generator().manual_seed(0)
    n, k = 512, 80
    logits = torch.randn(n, k, generator=g) * 3
    one_hot = torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=g), k).float()
    iou = torch.rand(n, generator=g)
    inter = torch.rand(n, generator=g) * 900 + 1
    union = inter + torch.rand(n, generator=g) * 900 + 1
    inputs = {
        "cls-sigmoid": {"X": logits, "Q": iou[:, None] * one_hot, "PY": one_hot, "NY": 1 - one_hot},
        "cls-softmax": {"X": logits, "Y": one_hot, "Z": iou},
        "reg": {"I": inter, "U": union, "E": union + torch.rand(n, generator=g) * 500},
    }
    worst: dict[str, float] = {}

    def run(loss: Loss, device: str) -> tuple[torch.Tensor, torch.Tensor]:
        values = {
            name: t.to(device).clone().requires_grad_(name in ("X", "I"))
            for name, t in inputs[loss.branch].items()
        }
        out = loss(**values)
        out.sum().backward()
        grad = values["X" if "X" in values else "I"].grad
        return out.detach().cpu().double(), grad.cpu().double()

    for name in NAMED:
        loss = Loss.named(name)
        (v_cpu, g_cpu), (v_dev, g_dev) = run(loss, "cpu"), run(loss, sizes.device)
        rel = max(
            float(((a - b).abs() / b.abs().clamp_min(1e-6)).max())
            for a, b in ((v_dev, v_cpu), (g_dev, g_cpu))
        )
        worst[name] = rel
    top = max(worst, key=worst.get)
    return {"max_rel_error": worst[top], "worst_loss": top, "per_loss": worst, "ok": worst[top] < 1e-3}


def seam_step_times(data: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    """Median forward+backward ms of one batch, stock loss vs focal + GIoU through the seam, with AMP off
    and bf16 (bf16 only where the device supports it)."""
    from autoloss.detection.loader import batch_of
    from autoloss.detection.runner import build_for, load_experiment_data
    from autoloss.loss import Loss

    cfg = experiment(data, sizes)
    split = load_experiment_data(cfg)
    stock = build_for(cfg, split, None, None).to(sizes.device).train()
    routed = build_for(cfg, split, Loss.named("focal"), Loss.named("giou")).to(sizes.device).train()
    routed.load_state_dict(stock.state_dict())
    images, targets = batch_of(split.train, list(range(sizes.batch)), sizes.device)
    out: dict[str, Any] = {}
    cuda = sizes.device == "cuda"
    for amp in ("off", "bf16") if cuda else ("off",):
        dtype = torch.bfloat16 if amp == "bf16" else None
        times: dict[str, list[float]] = {"stock": [], "seam": []}
        for i in range(sizes.steps + 3):
            for name, model in (
                (("stock", stock), ("seam", routed)) if i % 2 else (("seam", routed), ("stock", stock))
            ):
                model.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
                    losses = model(images, targets)
                sum(v.float() for v in losses.values()).backward()
                if cuda:
                    torch.cuda.synchronize()
                if i >= 3:
                    times[name].append(time.perf_counter() - start)
        stock_ms, seam_ms = (statistics.median(times[k]) * 1e3 for k in ("stock", "seam"))
        out[amp] = {"stock_ms": stock_ms, "seam_ms": seam_ms, "seam_overhead": seam_ms / stock_ms}
    if "bf16" in out:
        out["bf16_vs_fp32_step"] = out["bf16"]["seam_ms"] / out["off"]["seam_ms"]
    return out


def trainings_per_hour(sizes: Sizes) -> dict[str, Any]:
    """One training of the default proxy task on the device, and what that makes per hour."""
    from autoloss.tasks import Schedule, load_task

    task = load_task("detection", PROXY_SETTINGS)
    start = time.perf_counter()
    schedule = Schedule(iterations=sizes.proxy_iterations, seed=0, device=sizes.device)
    result = task.run("default", "default", schedule)
    seconds = time.perf_counter() - start
    return {
        "status": result.status,
        "seconds": seconds,
        "per_hour": 3600 / seconds,
        "AP": result.metrics.get("AP"),
        "iterations": sizes.proxy_iterations,
    }


def smoke_search(sizes: Sizes, folder: Path) -> dict[str, Any]:
    """`autoloss search --budget smoke` through the process backend with loader workers, as a user runs it."""
    out = folder / "smoke-search"
    cmd = [sys.executable, "-m", "autoloss", "search", "--budget", "smoke", "--backend", "process"]
    cmd += ["--workers", "2", "--device", sizes.device, "--loader-workers", str(sizes.loader_workers)]
    cmd += [*sizes.search, "--out", str(out), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    summary = out / "summary.json"
    found = json.loads(summary.read_text()).get("found_kind") if summary.is_file() else None
    return {
        "exit_code": done.returncode,
        "seconds": time.perf_counter() - start,
        "summary": summary.is_file(),
        "found_kind": found,
        "stderr_tail": done.stderr[-600:],
        "ok": done.returncode == 0 and summary.is_file(),
    }


def trial_of(exp: Any, seed: int) -> dict[str, Any]:
    """What the search sends a worker for one training of `exp` (an ExperimentConfig) with `seed`."""
    import dataclasses

    from autoloss.detection.task import DetectionTask, schedule_of
    from autoloss.evolution.work import trial_spec

    schedule = dataclasses.replace(schedule_of(exp), seed=seed)
    return trial_spec("detection", DetectionTask(exp).config(), schedule)


def shared_gpu(data: dict[str, str], sizes: Sizes, trainings: int = 4) -> dict[str, Any]:
    """Wall time of `trainings` short trainings on one worker vs two workers sharing the GPU."""
    from autoloss.evolution.work import proxy_task
    from autoloss.executors import make_executor

    if sizes.device != "cuda":
        return {"skipped": "needs CUDA (workers per GPU)"}
    exp = experiment(data, sizes, iterations=60)
    out: dict[str, Any] = {}
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
    out["speedup"] = out["1 per GPU"]["seconds"] / out["2 per GPU"]["seconds"]
    return out


def ray_half_gpus(data: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    if importlib.util.find_spec("ray") is None:
        return {"skipped": "Ray is not installed here"}
    if sizes.device != "cuda":
        return {"skipped": "needs CUDA (GPU fractions)"}
    from autoloss.evolution.work import proxy_task
    from autoloss.executors import make_executor

    exp = experiment(data, sizes, iterations=30, loader_workers=0)
    executor = make_executor("ray", 2, device="cuda", gpus_per_trial=0.5, cpus_per_trial=2)
    try:
        start = time.perf_counter()
        futures = [executor.submit(proxy_task, trial_of(exp, s), "bce", "giou") for s in range(2)]
        results = [f.result(timeout=400) for f in futures]
    finally:
        executor.shutdown()
    return {"seconds": time.perf_counter() - start, "statuses": [r["status"] for r in results]}


def headline(name: str, r: dict[str, Any]) -> str:
    """The table's one-cell result of section `name`."""
    if "error" in r:
        return f"error: {r['error'][:120]}"
    if "skipped" in r:
        return f"skipped: {r['skipped']}"
    if name == "losses":
        return f"max relative error {r['max_rel_error']:.2e} ({r['worst_loss']})"
    if name == "seam":
        cells = [
            f"{amp}: stock {v['stock_ms']:.1f} ms, seam {v['seam_ms']:.1f} ms ({v['seam_overhead']:.2f}x)"
            for amp, v in r.items()
            if isinstance(v, dict)
        ]
        if "bf16_vs_fp32_step" in r:
            cells.append(f"bf16/fp32 step {r['bf16_vs_fp32_step']:.2f}x")
        return "; ".join(cells)
    if name == "rate":
        ap = "n/a" if r["AP"] is None else f"{r['AP']:.4f}"
        return f"{r['per_hour']:.0f} /h ({r['seconds']:.1f} s for {r['iterations']} iterations, AP {ap})"
    if name == "smoke":
        written = "written" if r["summary"] else "missing"
        return f"exit {r['exit_code']}, summary {written}, found {r['found_kind']}"
    if name == "shared":
        return f"2 per GPU {r['speedup']:.2f}x the rate of 1"
    return json.dumps(r, default=str)[:160]


TITLES = {
    "losses": "published losses, CPU vs device",
    "seam": "seam step vs stock (fp32, --amp bf16)",
    "rate": "default proxy trainings per hour",
    "smoke": "smoke search, process backend, loader workers",
    "shared": "two process workers sharing the GPU",
    "ray": "Ray, 2 trials at 0.5 GPU",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/gpu-check")
    parser.add_argument("--dry-run", action="store_true", help="every section on the CPU at toy sizes")
    parser.add_argument("--only", help=f"comma-separated sections to run, of {','.join(TITLES)} [all]")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(TITLES)
    if set(chosen) - set(TITLES):
        parser.error(f"unknown section(s) {sorted(set(chosen) - set(TITLES))}; sections: {','.join(TITLES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = Sizes(args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        print(
            "gpu_check: CUDA is not available here; --dry-run checks the script on the CPU", file=sys.stderr
        )
        sys.exit(2)
    gpu = torch.cuda.get_device_name(0) if sizes.device == "cuda" else "none (dry run on the CPU)"
    report: dict[str, Any] = {"machine": describe_machine(), "gpu": gpu, "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="autoloss-gpu-") as tmp:
        folder = Path(tmp)
        data = make_data(folder, sizes)
        sections = {
            "losses": lambda: losses_cpu_vs_device(sizes),
            "seam": lambda: seam_step_times(data, sizes),
            "rate": lambda: trainings_per_hour(sizes),
            "smoke": lambda: smoke_search(sizes, folder),
            "shared": lambda: shared_gpu(data, sizes),
            "ray": lambda: ray_half_gpus(data, sizes),
        }
        for name, run in sections.items():
            if name not in chosen:
                continue
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
            print(f"{name}: {json.dumps(report[name], default=str)[:300]}", file=sys.stderr, flush=True)
    lines = [
        f"# GPU check ({time.strftime('%Y-%m-%d')})",
        "",
        f"GPU: {gpu}. {report['machine']}.",
        "",
        "| check | result | seconds |",
        "|---|---|---|",
    ]
    lines += [
        f"| {TITLES[k]} | {headline(k, report[k])} | {report[k]['section_seconds']:.1f} |" for k in chosen
    ]
    table = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(table)
    print(table)
    failed = [k for k in chosen if "error" in report[k] or report[k].get("ok") is False]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
