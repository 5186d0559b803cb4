"""The training loop: seeded SGD (or AdamW) with warm-up + cosine, gradient clipping, a divergence guard.

Seeded and deterministic on CPU: the seed fixes the batch order and flips (an explicit generator) and the
detector's own sampling (torch's global RNG, forked for the run and restored afterwards). A loss that
becomes non-finite or explodes stops the run with status "diverged"; any other error gives "failed". The
loop never raises for what happens during training and never prints: progress goes to a callback.
"""

from __future__ import annotations

import math
import os
import re
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from autoloss.detection.data import Split
from autoloss.detection.loader import to_device, train_loader
from autoloss.tasks.protocol import ProgressFn, TrainReport

AMP_MODES = ("off", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; exactly one of `iterations` and `epochs` must be set."""

    iterations: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 50
    warmup_factor: float = 0.001
    grad_clip: float | None = 10.0
    flip_prob: float = 0.5
    time_budget_s: float | None = None
    max_loss: float = 1e4
    explode_ratio: float = 100.0
    threads: int | None = 1
    device: str = "cpu"
    # Mixed precision on CUDA: "off", "bf16" or "fp16" (with a gradient scaler). Every loss, stock and
    # searched, is computed in float32 either way, so the choice does not favour one kind of loss.
    amp: str = "off"
    deterministic: bool = False  # torch.use_deterministic_algorithms + cuDNN determinism for the run
    loader_workers: int = 0  # processes decoding images for the loop (0: in the training process)
    # torch.compile the searched losses the seam calls each step (detection/compiled_loss.py): seconds of
    # compile per loss, so it pays only for long trainings; eager with a warning where it cannot compile.
    compile_loss: bool = False
    eval_batch_size: int = 32

    def __post_init__(self) -> None:
        # Results cached before amp was a choice stored a bool (True meant bf16 on CUDA).
        if isinstance(self.amp, bool):
            object.__setattr__(self, "amp", "bf16" if self.amp else "off")


def validate_train_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming the first bad setting and what would be accepted."""
    if (cfg.iterations is None) == (cfg.epochs is None):
        raise ValueError("set exactly one of iterations and epochs")
    for name in ("iterations", "epochs"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if cfg.batch_size < 1 or cfg.eval_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got {cfg.batch_size}/{cfg.eval_batch_size}")
    if cfg.optimizer not in ("sgd", "adamw"):
        raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {cfg.optimizer!r}")
    if not (cfg.lr > 0 and 0 < cfg.warmup_factor <= 1 and cfg.warmup_iters >= 0):
        raise ValueError("lr must be > 0, warmup_factor in (0, 1], warmup_iters >= 0")
    if not 0.0 <= cfg.flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {cfg.flip_prob}")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {cfg.grad_clip}")
    if cfg.device not in ("cpu", "cuda") and not cfg.device.startswith("cuda:"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {cfg.device!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1, got {cfg.threads}")
    if cfg.amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {cfg.amp!r}")
    if cfg.loader_workers < 0:
        raise ValueError(f"loader_workers must be >= 0, got {cfg.loader_workers}")
    if not isinstance(cfg.compile_loss, bool):
        raise ValueError(f"compile_loss must be true or false, got {cfg.compile_loss!r}")


# How a training went: the proxy-task protocol's report, so a task returns it as it is.
TrainOutcome = TrainReport


def total_iterations(cfg: TrainConfig, num_images: int) -> int:
    if cfg.iterations is not None:
        return cfg.iterations
    return int(cfg.epochs or 0) * max(1, num_images // cfg.batch_size)


def lr_factor(iteration: int, total: int, warmup: int, warmup_factor: float) -> float:
    """Linear warm-up from `warmup_factor` to 1, then cosine decay to 0 at `total`."""
    if iteration < warmup:
        return warmup_factor + (1.0 - warmup_factor) * iteration / warmup
    span = max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (iteration - warmup) / span)))


class deterministic:
    """Deterministic kernels for a block (torch.use_deterministic_algorithms, cuDNN without autotuning),
    restoring the caller's settings afterwards. CPU training is deterministic without it; on CUDA some
    kernels (scatter-add in the losses' backward, cuDNN's autotuned convolutions) are not.

    Strict: an op with no deterministic kernel raises instead of warning (torch's `warn_only` would let a
    "deterministic" run differ from its repeat with nothing but a log line to show for it). The training
    reports it as a failure naming the op (`nondeterministic_op`); `runner.validate_experiment` refuses
    the combinations known to hit one before anything is trained.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        if not self.enabled:
            return
        self._saved = (
            torch.are_deterministic_algorithms_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        )
        # cuBLAS needs a fixed workspace for deterministic matmuls; it reads this when CUDA starts.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        algorithms, cudnn_deterministic, benchmark = self._saved
        torch.use_deterministic_algorithms(algorithms)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = benchmark


_NONDETERMINISTIC = re.compile(r"^(\S+) does not have a deterministic implementation")


def nondeterministic_op(err: BaseException) -> str | None:
    """The op torch refused to run under deterministic algorithms, from its error, else None."""
    match = _NONDETERMINISTIC.match(str(err)) if isinstance(err, RuntimeError) else None
    return match.group(1) if match else None


class thread_limit:
    """torch.set_num_threads for a block, restoring the caller's setting afterwards."""

    def __init__(self, threads: int | None) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        self._saved = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self._saved)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def train_detector(
    model: torch.nn.Module,
    data: Split,
    cfg: TrainConfig,
    seed: int,
    progress: ProgressFn | None = None,
) -> TrainOutcome:
    """Train `model` in place on `data`; returns how it went, never raising for training failures."""
    validate_train_config(cfg)
    start = time.perf_counter()
    devices = [torch.device(cfg.device).index or 0] if cfg.device.startswith("cuda") else []
    state = _LoopState(start)
    with thread_limit(cfg.threads), torch.random.fork_rng(devices=devices), deterministic(cfg.deterministic):
        torch.manual_seed(seed)
        try:
            _loop(model, data, cfg, seed, progress, state)
        except (
            Exception
        ) as err:  # a crashing candidate loss is a result ("failed"), not a crash of the caller
            op = nondeterministic_op(err) if cfg.deterministic else None
            state.status = "failed"
            state.reason = (
                f"--deterministic: {op} has no deterministic implementation on {cfg.device} "
                f"(torch {torch.__version__}); train without --deterministic"
                if op
                else f"{type(err).__name__}: {err}"
            )
    finite = state.last_loss is not None and math.isfinite(state.last_loss)
    return TrainOutcome(
        status=state.status,
        reason=state.reason,
        iterations=state.iterations,
        seconds=time.perf_counter() - start,
        final_loss=state.last_loss if finite else None,
        loss_curve=state.curve,
    )


@dataclass
class _LoopState:
    start: float
    status: str = "ok"
    reason: str = ""
    iterations: int = 0
    last_loss: float | None = None
    curve: list[float] = field(default_factory=list)


_CURVE_EVERY = 10  # the loss curve keeps one mean per this many iterations
_EARLY_ITERS = 10  # the divergence guard's reference: mean |loss| of the first iterations


def _loop(model, data, cfg, seed, progress, state: _LoopState) -> None:
    if len(data) == 0:
        raise ValueError("no training images")
    total = total_iterations(cfg, len(data))
    model.to(cfg.device).train()
    optimizer = _optimizer(model, cfg)
    on_cuda = cfg.device.startswith("cuda")
    use_amp = cfg.amp != "off" and on_cuda
    dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    autocast = torch.autocast("cuda", dtype=dtype) if use_amp else nullcontext()
    # fp16 gradients underflow without loss scaling; bf16 has float32's range and needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and cfg.amp == "fp16")
    params = [p for p in model.parameters() if p.requires_grad]
    early: list[float] = []
    window: list[float] = []
    stream = iter(train_loader(data, cfg.batch_size, seed, cfg.flip_prob, cfg.loader_workers, cfg.device))
    for it in range(total):
        if cfg.time_budget_s is not None and time.perf_counter() - state.start > cfg.time_budget_s:
            state.reason = f"time budget of {cfg.time_budget_s:g} s reached after {it} iterations"
            return
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(it, total, cfg.warmup_iters, cfg.warmup_factor)
        images, targets = to_device(next(stream), cfg.device)
        with autocast:
            losses = model(images, targets)
        loss = sum(v.float() for v in losses.values())
        value = float(loss.detach())
        state.iterations, state.last_loss = it + 1, value
        problem = _divergence(value, early, cfg)
        if problem:
            state.status, state.reason = "diverged", f"iteration {it + 1}: {problem}"
            return
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip else float("inf"))
        if not torch.isfinite(norm):
            if scaler.is_enabled():
                scaler.update()  # an fp16 overflow: the scaler skips this step and lowers its scale
                continue
            state.status, state.reason = "diverged", f"iteration {it + 1}: non-finite gradient"
            return
        scaler.step(optimizer)
        scaler.update()
        window.append(value)
        if len(window) == _CURVE_EVERY or it + 1 == total:
            state.curve.append(sum(window) / len(window))
            window.clear()
        if progress is not None:
            progress(it + 1, total, value)


def _divergence(value: float, early: list[float], cfg: TrainConfig) -> str:
    if not math.isfinite(value):
        return f"loss is {value}"
    if abs(value) > cfg.max_loss:
        return f"loss {value:.3g} exceeds {cfg.max_loss:g}"
    if len(early) < _EARLY_ITERS:
        early.append(abs(value))
        return ""
    reference = sum(early) / len(early)
    if reference > 0 and abs(value) > cfg.explode_ratio * reference:
        return f"loss {value:.3g} is over {cfg.explode_ratio:g}x its early value {reference:.3g}"
    return ""
