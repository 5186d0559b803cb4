"""`--compile-loss`: the seam's searched losses run through `torch.compile` (inductor), eager where it fails.

Opt-in, because it pays only for long trainings with large loss tensors. Compiling costs seconds per
loss (measured on a 2-core CPU: ~28 s for the first compile in a process with a cold inductor cache, 3-13 s
per new loss, well under a second once inductor's disk cache holds the graph) and the saving depends on
size: a fused focal loss over 20k x 80 COCO-like logits runs in half the eager time, while at the CPU
proxy's sizes (5.4k x 5 logits, a few hundred boxes) the compiled call's fixed overhead (~0.1 ms) makes
it no faster or slower (BENCHMARKS.md, bench/compile_loss.py). A search trains many short proxies of many
losses, each paying its compile again. Stock losses (None) are torchvision's functions, left as they are.

Shapes change every step (the number of locations, positives and sampled RoIs), so the graph is
compiled with dynamic shapes: one graph serves every size; a batch with a single row (size 1 is
specialised by the compiler) costs one more. `CompiledLoss.graphs` counts the compiles.

Never a crash: the compiler is probed once per process (a tiny forward and backward); where it is
unusable (on CPU inductor needs a C++ compiler) or a loss does not compile, the eager function runs and
one `CompileWarning` says why. A loss that raises in eager raises the same error here, and NaN or
infinite values come out as in eager, so the training's divergence handling sees what it would without
compiling. Values agree with eager within float32 rounding, not bitwise, so a long training's trajectory
(and its mAP) drifts within seed noise: compare losses with the same setting. A compiled backward frees
its buffers, so a graph through a compiled loss cannot be backpropagated twice (retain_graph).
"""

from __future__ import annotations

import copy
import functools
import time
import warnings
from typing import Any

import torch

BACKEND = "inductor"
_PROBED: dict[str, str | None] = {}  # backend -> why it is unusable (None: usable), once per process


class CompileWarning(UserWarning):
    """torch.compile could not be used for a loss; the loss runs eagerly (the training goes on)."""


def compile_losses(cls_loss: Any, reg_loss: Any, enabled: bool) -> tuple[Any, Any]:
    """The seam's two losses, each wrapped in `CompiledLoss` when `enabled` (None stays None)."""
    if not enabled:
        return cls_loss, reg_loss
    return compiled(cls_loss), compiled(reg_loss)


def compiled(loss: Any) -> Any:
    """`loss` as a `CompiledLoss` (None and already-wrapped losses are returned as they are)."""
    if loss is None or isinstance(loss, CompiledLoss):
        return loss
    return CompiledLoss(loss)


def compiler_problem(backend: str = BACKEND) -> str | None:
    """Why `torch.compile(backend=...)` cannot be used in this process, or None; probed once."""
    if backend not in _PROBED:
        _PROBED[backend] = _probe(backend)
    return _PROBED[backend]


def _probe(backend: str) -> str | None:
    def tiny(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x) * x

    try:
        x = torch.linspace(-1.0, 1.0, 8, requires_grad=True)
        torch.compile(tiny, dynamic=True, backend=backend)(x).sum().backward()
    except Exception as err:  # no C++ compiler, a broken toolchain, an unknown backend: all mean eager
        return _reason(err)
    return None


def _reason(err: BaseException) -> str:
    """One line: the error's type and first line (the backend's own error, where dynamo wrapped it)."""
    err = getattr(err, "inner_exception", None) or err
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


class CompiledLoss:
    """A Loss-like object (`.branch`, `.text`, called with the branch's inputs) computing `loss` compiled.

    An autoloss `Loss` keeps its own input preparation and has its generated torch function (`fn`, one
    code object per loss) compiled, so the compiled graphs of many losses in one process never share
    the compiler's per-function cache; another Loss-like object is compiled as a whole.
    """

    def __init__(self, loss: Any, backend: str = BACKEND) -> None:
        self.loss = loss
        self.branch = loss.branch
        self.text = getattr(loss, "text", repr(loss))
        self.label = getattr(loss, "name", None) or _short(self.text)  # how warnings name it
        self.backend = backend
        self.graphs = 0  # graphs the compiler built for this loss: the first one and every recompile
        self.compile_seconds = 0.0  # wall time of the calls that compiled
        self.fallback: str | None = None  # why this loss runs eagerly, once it does
        self._target: Any = None

    def __call__(self, **inputs: Any) -> Any:
        if self.fallback is not None:
            return self.loss(**inputs)
        if self._target is None:
            problem = compiler_problem(self.backend)
            if problem is not None:
                return self._eager(f"torch.compile is unusable here ({problem})", inputs)
            self._target = self._compiled_target()
        graphs, start = self.graphs, time.perf_counter()
        try:
            out = self._target(**inputs)
        except Exception as err:
            # The eager call decides: a loss that fails eagerly too raises its own error, as without
            # compiling; one that works eagerly keeps training, eagerly.
            return self._eager(f"loss {self.label} did not compile ({_reason(err)})", inputs)
        if self.graphs != graphs:
            self.compile_seconds += time.perf_counter() - start
        return out

    def _eager(self, why: str, inputs: dict[str, Any]) -> Any:
        out = self.loss(**inputs)
        self.fallback = why
        warnings.warn(f"--compile-loss: {why}; the loss runs eagerly", CompileWarning, stacklevel=2)
        return out

    def _compiled_target(self) -> Any:
        inner = torch._dynamo.lookup_backend(self.backend)

        def counting_backend(graph: Any, example_inputs: Any) -> Any:
            self.graphs += 1
            return inner(graph, example_inputs)

        if isinstance(getattr(type(self.loss), "fn", None), functools.cached_property):
            # autoloss.loss.Loss: `fn` is a cached property, so a copy holding the compiled function in
            # its place calls it from the Loss's own __call__ (which checks and broadcasts the inputs)
            target = copy.copy(self.loss)
            target.__dict__["fn"] = torch.compile(self.loss.fn, dynamic=True, backend=counting_backend)
            return target
        return torch.compile(self.loss.__call__, dynamic=True, backend=counting_backend)

    def __repr__(self) -> str:
        return f"CompiledLoss({self.text!r}, branch={self.branch!r})"

    def __getstate__(self) -> dict[str, Any]:
        # Compiled functions do not pickle; a copy in another process compiles again on its first call.
        return {"loss": self.loss, "backend": self.backend}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["loss"], state["backend"])
