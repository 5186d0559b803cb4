"""Where a proxy training's time goes, on a frozen copy of the default real-data proxy task.

The task is fixed here, not read from the search's defaults, so that numbers from different commits are
about the same work: FCOS with the tiny backbone on the built-in BCCD photos, letterboxed to 128 px,
batch 16, SGD, 300 iterations, one torch thread, default losses; AP on BCCD's search-val split (87 images).

    python bench/training.py profile [--iterations 300] [--procs 1 2]
        Phase by phase: data (fetch = decode and resize on first touch, from the decoded cache after;
        to_device = uint8 to float), forward (the network without its loss), loss (target matching and
        the loss functions), backward, optimizer (gradient clipping and the SGD step), then evaluation
        (inference, box decoding, conversion to COCO records, COCO eval). With `--procs 2` two copies run
        at once, one per core, as two search workers do. The instrumented loop repeats the training loop's
        steps (detection/train.py) and the bench checks that it ends at the same loss as `train_detector`
        on the same seed, bit for bit, so the breakdown is of the real training.

    python bench/training.py floor
        The compute floor: floating-point operations of one training step (forward and backward, counted
        by torch.utils.flop_counter), the rate the step achieves, and what one core reaches on a large
        float32 matrix product, i.e. how far the model's own arithmetic bounds a training.

    python bench/training.py rate [--before REV] [--trainings 4]
        Trainings per hour through the proxy-task API (what a search worker calls): one process, and two
        processes at once. With `--before REV` the same measurement runs first on a git worktree of REV
        (the package imported from there), in the same invocation, so "before" and "after" share the
        machine and its load.

    python bench/training.py compile [--steps 30]
        torch.compile (inductor) of the network body, backbone + FPN and the head's towers, whose input
        shapes the letterboxed size fixes (the loss's target matching stays eager: its shapes change every
        step), against eager in the same process: what the first compile costs, what a second model costs
        (a search worker's next training: same code, new weights), the steady step time of each, and the
        iterations after which the compile has paid for itself.

Results go to BENCHMARKS.md with the machine line this prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The frozen task (see the docstring): detection-task settings and the length.
SETTINGS = {"preset": "fcos-shapes", "data": "bccd", "image_size": 128}
ITERATIONS = 300


class Clock:
    """Seconds per named phase, accumulated."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def timed(self, name: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        return wrapper


def profile_once(iterations: int, seed: int = 0) -> dict:
    """One training and one evaluation of the frozen task, timed phase by phase."""
    import torch

    from autoloss.detection.coco_eval import coco_ground_truth, coco_map, detections_to_coco
    from autoloss.detection.loader import to_device, train_loader
    from autoloss.detection.runner import build_for, load_experiment_data, predict
    from autoloss.detection.task import DetectionTask
    from autoloss.detection.train import lr_factor, thread_limit, train_detector

    exp = DetectionTask.from_settings(SETTINGS).experiment
    cfg = dataclasses.replace(exp.train, iterations=iterations)
    clock = Clock()

    # The reference: the real loop, untouched, on its own load of the data (its own decoded cache).
    ref_data = load_experiment_data(exp)
    reference = train_detector(build_for(exp, ref_data, None, None), ref_data.train, cfg, seed)

    data = load_experiment_data(exp)

    model = build_for(exp, data, None, None)
    fcos = model.model
    # FCOS.forward calls self.compute_loss (matching + the head's losses) and, in eval, postprocessing.
    fcos.compute_loss = clock.timed("loss", fcos.compute_loss)
    fcos.postprocess_detections = clock.timed("box decoding", fcos.postprocess_detections)
    total_start = time.perf_counter()
    with thread_limit(cfg.threads), torch.random.fork_rng():
        torch.manual_seed(seed)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        stream = iter(train_loader(data.train, cfg.batch_size, seed, cfg.flip_prob, 0, "cpu"))
        fetch, move = clock.timed("fetch", next), clock.timed("to_device", to_device)
        value = None
        for it in range(iterations):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(it, iterations, cfg.warmup_iters, cfg.warmup_factor)
            images, targets = move(fetch(stream), "cpu")
            start = time.perf_counter()
            losses = model(images, targets)
            loss = sum(v.float() for v in losses.values())
            value = float(loss.detach())
            clock.seconds["forward+loss"] += time.perf_counter() - start
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clock.seconds["backward"] += time.perf_counter() - start
            start = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            clock.seconds["optimizer"] += time.perf_counter() - start
        train_seconds = time.perf_counter() - total_start
        start = time.perf_counter()
        detections = predict(model, data.val, cfg.eval_batch_size)
        clock.seconds["inference"] = time.perf_counter() - start - clock.seconds["box decoding"]
        start = time.perf_counter()
        records = detections_to_coco(detections, data.val)
        clock.seconds["to COCO records"] = time.perf_counter() - start
        start = time.perf_counter()
        metrics = coco_map(coco_ground_truth(data.val), records)
        clock.seconds["COCO eval"] = time.perf_counter() - start
    if value != reference.final_loss:
        raise SystemExit(
            f"the instrumented loop diverged from train_detector: {value} vs {reference.final_loss}"
        )
    phases = dict(clock.seconds)
    phases["forward"] = phases.pop("forward+loss") - phases["loss"]
    return {
        "iterations": iterations,
        "train_seconds": train_seconds,
        "eval_seconds": sum(phases[k] for k in ("inference", "box decoding", "to COCO records", "COCO eval")),
        "phases": phases,
        "AP": metrics["AP"],
        "final_loss": value,
    }


TRAIN_PHASES = ("fetch", "to_device", "forward", "loss", "backward", "optimizer")
EVAL_PHASES = ("inference", "box decoding", "to COCO records", "COCO eval")


def _profile_worker(iterations: int, seed: int, queue) -> None:
    queue.put(profile_once(iterations, seed))


def profile(iterations: int, procs: list[int]) -> None:
    for n in procs:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        workers = [ctx.Process(target=_profile_worker, args=(iterations, i, queue)) for i in range(n)]
        for w in workers:
            w.start()
        runs = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        print(f"\n{n} process(es) at once, {iterations} iterations each (mean over processes):")
        print(f"  {'phase':<18}{'total s':>9}{'ms / it':>9}{'share':>8}")
        total = statistics.mean(r["train_seconds"] + r["eval_seconds"] for r in runs)
        for name in (*TRAIN_PHASES, *EVAL_PHASES):
            s = statistics.mean(r["phases"][name] for r in runs)
            per_it = f"{1000 * s / iterations:9.1f}" if name in TRAIN_PHASES else f"{'':9}"
            print(f"  {name:<18}{s:9.2f}{per_it}{100 * s / total:7.1f}%")
        train = statistics.mean(r["train_seconds"] for r in runs)
        print(f"  {'training':<18}{train:9.2f}{1000 * train / iterations:9.1f}")
        print(f"  {'evaluation':<18}{statistics.mean(r['eval_seconds'] for r in runs):9.2f}")
        aps = ", ".join(f"{r['AP']:.4f}" for r in runs)
        print(f"  AP {aps}; the loop matched train_detector bit for bit")


def floor(steps: int = 20) -> None:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from autoloss.detection.loader import to_device, train_loader
    from autoloss.detection.runner import build_for, load_experiment_data
    from autoloss.detection.task import DetectionTask
    from autoloss.detection.train import thread_limit

    exp = DetectionTask.from_settings(SETTINGS).experiment
    data = load_experiment_data(exp)
    model = build_for(exp, data, None, None).train()
    stream = iter(train_loader(data.train, exp.train.batch_size, 0, exp.train.flip_prob))
    batches = [to_device(next(stream), "cpu") for _ in range(steps)]

    def step(images, targets) -> None:
        loss = sum(model(images, targets).values())
        model.zero_grad(set_to_none=True)
        loss.backward()

    with thread_limit(exp.train.threads):
        for images, targets in batches[:3]:  # allocator and kernel warm-up
            step(images, targets)
        with FlopCounterMode(display=False) as counter:
            step(*batches[0])
        flops = counter.get_total_flops()
        start = time.perf_counter()
        for images, targets in batches:
            step(images, targets)
        per_step = (time.perf_counter() - start) / steps
        a = torch.randn(1024, 1024)
        a @ a
        reps = 20
        start = time.perf_counter()
        for _ in range(reps):
            a @ a
        gemm = 2 * 1024**3 * reps / (time.perf_counter() - start)
    achieved = flops / per_step
    print(f"\nforward + backward: {flops / 1e9:.2f} GFLOP a step, {1000 * per_step:.1f} ms a step")
    print(f"achieved {achieved / 1e9:.1f} GFLOP/s; a 1024² float32 matmul: {gemm / 1e9:.1f} GFLOP/s")
    print(f"the step runs at {100 * achieved / gemm:.0f} % of the matmul's rate; at 100 % the")
    now, best = ITERATIONS * per_step, ITERATIONS * flops / gemm
    print(f"forward + backward of a {ITERATIONS}-iteration training would take {best:.1f} s, not {now:.1f} s")


def compile_bench(steps: int = 30) -> None:
    import torch

    from autoloss.detection.loader import to_device, train_loader
    from autoloss.detection.runner import build_for, load_experiment_data
    from autoloss.detection.task import DetectionTask
    from autoloss.detection.train import thread_limit

    exp = DetectionTask.from_settings(SETTINGS).experiment
    data = load_experiment_data(exp)
    stream = iter(train_loader(data.train, exp.train.batch_size, 0, exp.train.flip_prob))
    batches = [to_device(next(stream), "cpu") for _ in range(steps + 1)]

    def model(compiled: bool):
        torch.manual_seed(0)
        m = build_for(exp, data, None, None).train()
        if compiled:
            fcos = m.model
            fcos.backbone = torch.compile(fcos.backbone)
            fcos.head.classification_head = torch.compile(fcos.head.classification_head)
            fcos.head.regression_head = torch.compile(fcos.head.regression_head)
        return m

    def timed_steps(m) -> tuple[float, list[float], float]:
        """The first step (a compiled model compiles in it), the later ones, and the first step's loss."""
        times, first_loss = [], None
        for images, targets in batches:
            start = time.perf_counter()
            loss = sum(m(images, targets).values())
            m.zero_grad(set_to_none=True)
            loss.backward()
            times.append(time.perf_counter() - start)
            first_loss = float(loss.detach()) if first_loss is None else first_loss
        return times[0], times[1:], first_loss

    with thread_limit(exp.train.threads):
        eager_first, eager, eager_loss = timed_steps(model(False))
        first_compile, compiled, compiled_loss = timed_steps(model(True))
        second_compile, compiled_again, _ = timed_steps(model(True))
        _, eager2, _ = timed_steps(model(False))
    e = statistics.median(eager + eager2)
    c = statistics.median(compiled + compiled_again)
    ratio = f"{e / c:.2f}x"
    print(
        f"\nsteady step (median of {2 * steps}): eager {1000 * e:.1f} ms, compiled {1000 * c:.1f} ms, {ratio}"
    )
    print(
        f"first step: eager {eager_first:.2f} s; compiled {first_compile:.1f} s (first model), "
        f"{second_compile:.1f} s (a second model in the same process)"
    )
    print(f"first-step loss: eager {eager_loss:.6f}, compiled {compiled_loss:.6f}")
    if c < e:
        for label, overhead in (("first", first_compile), ("second", second_compile)):
            print(f"break-even ({label} model): {(overhead - e) / (e - c):.0f} iterations")
    else:
        print("compiled steps are not faster: the compile never pays back")


def _rate_worker(trainings: int, first_seed: int, queue) -> None:
    from autoloss.tasks import Schedule, load_task

    task = load_task("detection", SETTINGS)
    out = []
    for seed in range(first_seed, first_seed + trainings):
        start = time.perf_counter()
        result = task.run("default", "default", Schedule(iterations=ITERATIONS, seed=seed))
        out.append((time.perf_counter() - start, result.metrics.get("AP")))
    queue.put(out)


def rate(trainings: int) -> dict:
    """Trainings per hour with one process and with two at once (each doing `trainings`)."""
    import autoloss

    ctx = mp.get_context("spawn")
    result = {"package": str(Path(autoloss.__file__).parent)}
    for n in (1, 2):
        queue = ctx.Queue()
        start = time.perf_counter()
        workers = [ctx.Process(target=_rate_worker, args=(trainings, 100 * i, queue)) for i in range(n)]
        for w in workers:
            w.start()
        runs = [queue.get() for _ in workers]
        for w in workers:
            w.join()
        wall = time.perf_counter() - start
        done = sum(len(r) for r in runs)
        result[f"{n}proc"] = {
            "trainings": done,
            "wall_s": wall,
            "per_hour": 3600 * done / wall,
            "seconds_each": [s for r in runs for s, _ in r],
            "aps": [ap for r in runs for _, ap in r],
        }
    return result


def rate_command(before: str | None, trainings: int) -> None:
    rows = []
    if before:
        with tempfile.TemporaryDirectory() as tmp:
            tree = Path(tmp) / "before"
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), before], check=True
            )
            try:
                env = {**os.environ, "PYTHONPATH": str(tree / "src")}
                cmd = [sys.executable, __file__, "rate", "--trainings", str(trainings), "--json"]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                rows.append((f"before ({before})", json.loads(out.strip().splitlines()[-1])))
            finally:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True
                )
    rows.append(("this tree", rate(trainings)))
    print(f"\n{'':<24}{'1 process /h':>14}{'2 processes /h':>16}{'s per training (1p)':>22}")
    for label, r in rows:
        one, two = r["1proc"], r["2proc"]
        print(
            f"{label:<24}{one['per_hour']:14.1f}{two['per_hour']:16.1f}"
            f"{statistics.mean(one['seconds_each']):22.1f}"
        )
        print(f"{'':<24}imported from {r['package']}; AP (1p) {[round(a, 4) for a in one['aps']]}")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine import describe

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("profile")
    p.add_argument("--iterations", type=int, default=ITERATIONS)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    sub.add_parser("floor")
    c = sub.add_parser("compile")
    c.add_argument("--steps", type=int, default=30)
    r = sub.add_parser("rate")
    r.add_argument("--before", help="a git revision to measure first, from a worktree")
    r.add_argument("--trainings", type=int, default=4, help="trainings per process")
    r.add_argument("--json", action="store_true", help=argparse.SUPPRESS)  # the worktree run's output
    args = parser.parse_args()
    if args.command == "rate" and args.json:
        print(json.dumps(rate(args.trainings)))
        return
    print(f"machine: {describe()}")
    print(f"task: {SETTINGS}, {ITERATIONS} iterations (profile: --iterations)")
    if args.command == "profile":
        profile(args.iterations, args.procs)
    elif args.command == "floor":
        floor()
    elif args.command == "compile":
        compile_bench(args.steps)
    else:
        rate_command(args.before, args.trainings)


if __name__ == "__main__":
    main()
