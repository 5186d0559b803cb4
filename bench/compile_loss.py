"""`--compile-loss`: eager vs torch.compile'd named losses, forward+backward, side by side; compile cost.

    .venv/bin/python bench/compile_loss.py [--repeats 30] [--threads 1] [--cold] [--train 200]

Per loss and size: the median time of the eager expression and of the same expression through
`CompiledLoss` (inductor, dynamic shapes), interleaved round by round with a new row count every round
(±10 %, as the number of locations and positives changes every training step); the one-off compile
time (the first compiled call minus an eager one; a second size of the same loss reuses the graph) and
the break-even number of steps it takes to earn the loss's first compile back. Only the loss is timed:
its inputs (X, or I/U/E) are leaves, as the seam's are to the loss.

--cold points inductor at an empty cache folder first (what a fresh machine pays); by default its disk
cache from earlier runs is used, as on a machine that has compiled these losses before. --train N also
trains the fcos-shapes proxy with focal + GIoU for N iterations, eager and compiled alternately (two
pairs), and reports the training seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


DEVICE = "cpu"
FIRST_COMPILE: dict[str, float] = {}  # loss name -> seconds its first compiled call took beyond eager


def _cls_inputs(n, k, gen):
    import torch

    x = (torch.randn(n, k, generator=gen) * 3).to(DEVICE).requires_grad_(True)
    y = (torch.rand(n, k, generator=gen) < 0.01).float().to(DEVICE)
    return {"X": x, "Q": y * 0.7, "PY": y, "NY": 1 - y}, x


def _reg_inputs(n, gen):
    import torch

    from autoloss.detection.loss_inputs import reg_inputs

    xy = torch.rand(n, 2, generator=gen) * 500
    target = torch.cat([xy, xy + torch.rand(n, 2, generator=gen) * 100 + 1], 1)
    pred = target + torch.randn(n, 4, generator=gen) * 10
    inputs = {k: v.detach().to(DEVICE).requires_grad_(True) for k, v in reg_inputs(pred, target).items()}
    return inputs, inputs["I"]


def _timed(loss, inputs) -> float:
    import torch

    for value in inputs.values():
        value.grad = None
    sync = torch.cuda.synchronize if DEVICE.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    loss(**inputs).sum().backward()
    sync()
    return time.perf_counter() - start


def compare(label, name, make, sizes_of, repeats, gen) -> dict:
    from autoloss import Loss
    from autoloss.detection.compiled_loss import CompiledLoss

    eager = Loss.named(name)
    fast = CompiledLoss(Loss.named(name))  # its own Loss: no state shared with the eager one
    first_inputs = make(sizes_of(0), gen)[0]
    eager_first = _timed(eager, first_inputs)
    compile_s = _timed(fast, first_inputs) - eager_first  # the first compiled call compiles
    # A loss compiles once per training: later sizes of the same expression reuse its graph (dynamic
    # shapes), so the break-even charges each loss its first compile.
    reused = name in FIRST_COMPILE
    FIRST_COMPILE.setdefault(name, compile_s)
    for _ in range(3):  # warm-up: allocator, caches
        _timed(eager, first_inputs), _timed(fast, first_inputs)
    a, b = [], []
    for r in range(repeats):
        inputs = make(sizes_of(r + 1), gen)[0]
        if r % 2:  # alternate which goes first, so neither always sees a warm cache
            b.append(_timed(fast, inputs))
            a.append(_timed(eager, inputs))
        else:
            a.append(_timed(eager, inputs))
            b.append(_timed(fast, inputs))
    ma, mb = statistics.median(a), statistics.median(b)
    saved = ma - mb
    breakeven = f"{FIRST_COMPILE[name] / saved:,.0f}" if saved > 0 else "never"
    compiled_s = "reused" if reused else f"{compile_s:.1f}"
    row = f"| {label} | {ma * 1e3:.3f} | {mb * 1e3:.3f} | {mb / ma:.2f} | {compiled_s} | {breakeven} |"
    row += f" {fast.graphs} |" if fast.fallback is None else f" fallback: {fast.fallback} |"
    print(row, flush=True)
    return {"eager": ma, "compiled": mb, "compile": compile_s, "graphs": fast.graphs}


def train_pair(iterations: int, pairs: int) -> None:
    from autoloss.detection.presets import preset
    from autoloss.detection.task import run_experiment

    times: dict[bool, list[float]] = {False: [], True: []}
    aps: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(pairs):
        for flag in (False, True):
            cfg = preset(
                "fcos-shapes",
                cls_loss="focal",
                reg_loss="giou",
                train={"iterations": iterations, "compile_loss": flag},
            )
            result, detector = run_experiment(cfg)
            head = detector.model.head
            note = f", graphs {head.cls_loss.graphs}+{head.reg_loss.graphs}" if flag else ""
            print(
                f"  compile_loss={flag}: {result.status}, train {result.train_seconds:.1f} s, "
                f"AP {result.metrics.get('AP', float('nan')):.4f}{note}",
                flush=True,
            )
            times[flag].append(result.train_seconds)
            aps[flag].append(result.metrics.get("AP", float("nan")))
    eager, compiled = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"fcos-shapes, focal + GIoU, {iterations} iterations, 1 thread: eager {eager:.1f} s, "
        f"compiled {compiled:.1f} s (ratio {compiled / eager:.2f}; medians of {pairs}); "
        f"AP eager {aps[False]}, compiled {aps[True]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the proxy trains on 1)")
    parser.add_argument("--cold", action="store_true", help="start inductor with an empty cache")
    parser.add_argument("--train", type=int, default=0, metavar="N", help="also train fcos-shapes N iters")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the loss timings only)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if args.cold:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-cold-")
    import torch

    from autoloss.detection.compiled_loss import compiler_problem
    from machine import describe

    torch.set_num_threads(args.threads)
    cache = "cold" if args.cold else "warm"
    print(f"machine: {describe()}; {torch.get_num_threads()} threads; inductor cache {cache}")
    start = time.perf_counter()
    problem = compiler_problem()
    print(f"compiler probe: {time.perf_counter() - start:.1f} s, {problem or 'usable'}")
    if problem:
        print("no usable compiler: nothing to compare (--compile-loss falls back to eager here)")
        return
    gen = torch.Generator().manual_seed(0)

    def jitter(base):
        sizes = torch.randint(int(base * 0.9), int(base * 1.1) + 1, (args.repeats + 1,), generator=gen)
        return lambda r: int(sizes[r])

    print(
        "| loss, rows | eager (ms) | compiled (ms) | ratio | compile (s) | break-even steps | graphs |\n"
        "|---|---|---|---|---|---|---|"
    )
    compare(
        "focal, 5.4k x 5 (fcos-shapes batch)",
        "focal",
        lambda n, g: _cls_inputs(n, 5, g),
        jitter(5440),
        args.repeats,
        gen,
    )
    compare(
        "focal, 20k x 80 (COCO-like)",
        "focal",
        lambda n, g: _cls_inputs(n, 80, g),
        jitter(20_000),
        args.repeats,
        gen,
    )
    compare("GIoU, 300 boxes (fcos-shapes positives)", "giou", _reg_inputs, jitter(300), args.repeats, gen)
    compare("GIoU, 2k boxes", "giou", _reg_inputs, jitter(2_000), args.repeats, gen)
    if args.train:
        torch.set_num_threads(1)
        train_pair(args.train, args.pairs)


if __name__ == "__main__":
    main()
