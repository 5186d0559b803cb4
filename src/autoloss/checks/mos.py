"""Model optimisation simulation (MOS): optimise a toy model with the candidate loss, score the result.

- cls-softmax / cls-sigmoid: a tiny MLP trained full-batch for `cls_steps` steps of SGD with momentum on
  the fixed detection-like set of `mos_data`; the score is a COCO-style AP on held-out samples (mean over
  foreground classes and IoU thresholds 0.50:0.95, where a sample counts as a hit at threshold t only if its
  quality is >= t). SGD, not Adam, so that badly scaled losses are punished as a detector's SGD would.
- reg: free box deltas (Faster R-CNN's (dx, dy, dw, dh) on each start box) optimised with Adam for
  `reg_steps` steps toward their targets; the score is the mean IoU reached.

A candidate passes when its score reaches `min_ratio` x the branch baseline's score on the very same
simulation (ce, focal, giou: computed once per config and cached). The calibration (BENCHMARKS.md,
"Screening"): cls MOS separates bad from good but cannot rank CE-like losses, hence one shared seed and a
relative threshold; reg MOS ranks well. A NaN or inf at any step rejects. Nothing random happens after
the cached data set and initial weights are drawn, so the same loss always gets the same score.

Batches: many candidates of one branch are simulated together. Their states are stacked along a leading
candidate axis ([B, N, 4] deltas; [B, ...] MLP weights, multiplied with `baddbmm`); each candidate's own
compiled loss runs on its slice, the per-candidate totals are summed, and one backward and one optimiser
update serve them all. Every shared operation either acts elementwise or per slice (a batched matmul is one
matmul per candidate), and the loss only ever sees its own slice, so a candidate's trajectory - and its score
- is bit-identical alone (B = 1, the path `mos` and `simulate` take) and in any batch
(tests/test_checks_mos_batch.py). A candidate that fails (non-finite value, a crash inside its loss) or is
stopped early leaves the batch; the others never see it.

Early stopping: at the checkpoints `stop_checkpoints` (fractions of the steps) a candidate's running score
(reg: the mean IoU of its current boxes; cls: the test AP of its current weights) is compared with the
baseline's at the same step; below `*_stop_ratio` x that, the simulation stops and the candidate is rejected.
The ratios are far below the pass ratios (calibrated on the named losses and a panel of random survivors:
no candidate that passes the full simulation is stopped), so stopping saves time without changing verdicts.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from autoloss.checks.config import CheckConfig, MOSConfig
from autoloss.checks.mos_data import ClsProblem, RegProblem, cls_problem, reg_problem
from autoloss.checks.probes import BOX_EPS, DTYPE, sigmoid_inputs, softmax_inputs
from autoloss.checks.verdict import single_thread
from autoloss.loss import Loss
from autoloss.spaces.branches import FOCAL_ALPHA
from autoloss.spaces.named import DEFAULTS

IOU_THRESHOLDS = torch.linspace(0.5, 0.95, 10)
PRIOR_BIAS = -math.log(99.0)  # one-stage heads start their class logits at p = 0.01 (RetinaNet, FCOS)
MAX_DW = math.log(1000.0 / 16)  # torchvision's clamp on decoded log-size deltas
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class Simulation:
    """One candidate's simulation: a score, or why there is none (non-finite, crashed, stopped early).

    `checkpoints` holds the running score at each checkpoint step the candidate reached."""

    score: float | None
    failure: str | None = None
    checkpoints: tuple[float, ...] = ()
    stopped: bool = False


def simulate(loss: Loss, config: MOSConfig) -> tuple[float | None, str | None]:
    """(score, None), or (None, why) when the optimisation produced a non-finite number. No early stop."""
    sim = simulate_batch([loss], config)[0]
    return sim.score, sim.failure


def simulate_batch(
    losses: Sequence[Loss], config: MOSConfig, stop: Simulation | None = None
) -> list[Simulation]:
    """Simulate losses of one branch together; with `stop` (the baseline's simulation), stop those clearly
    below its running scores at the checkpoints.

    A crash inside one candidate's loss is that candidate's failure ("crashed: ..."); an error outside the
    candidates' own code propagates.
    """
    if not losses:
        return []
    branches = {loss.branch for loss in losses}
    if len(branches) != 1:
        raise ValueError(f"a MOS batch holds losses of one branch, got {', '.join(sorted(branches))}")
    with torch.enable_grad(), single_thread():
        if losses[0].branch == "reg":
            return _simulate_reg(list(losses), config, stop)
        return _simulate_cls(list(losses), config, stop)


def mos(loss: Loss, config: CheckConfig) -> tuple[bool, str, float | None]:
    return mos_batch([loss], config)[0]


def mos_batch(losses: Sequence[Loss], config: CheckConfig) -> list[tuple[bool, str, float | None]]:
    """(passed, reason, score) per loss, in order: losses of a branch are simulated `batch_size` at a time."""
    out: list[tuple[bool, str, float | None]] = [(False, "", None)] * len(losses)
    by_branch: dict[str, list[int]] = {}
    for k, loss in enumerate(losses):
        by_branch.setdefault(loss.branch, []).append(k)
    size = config.mos.batch_size
    for branch, indices in by_branch.items():
        base = baseline(branch, config.mos)
        stop = base if config.mos.stop_checkpoints else None
        score = baseline_score(branch, config.mos)
        for start in range(0, len(indices), size):
            chunk = indices[start : start + size]
            sims = _simulate_chunk([losses[k] for k in chunk], config.mos, stop)
            for k, sim in zip(chunk, sims, strict=True):
                out[k] = judge(branch, sim, score, config.mos)
    return out


def _simulate_chunk(losses: list[Loss], config: MOSConfig, stop: Simulation | None) -> list[Simulation]:
    try:
        return simulate_batch(losses, config, stop)
    except Exception:
        if len(losses) == 1:
            raise
    # Something failed outside any one candidate's forward (its backward, say): alone, each candidate's
    # failure is its own, and alone gives the very same results as in the batch.
    out = []
    for loss in losses:
        try:
            out.extend(simulate_batch([loss], config, stop))
        except Exception as exc:  # a bad candidate is a rejection, never a crash of the batch
            out.append(Simulation(None, _crashed(exc)))
    return out


def judge(branch: str, sim: Simulation, base: float, config: MOSConfig) -> tuple[bool, str, float | None]:
    """The MOS verdict on a simulation: its score against `min_ratio` x the baseline's score `base`."""
    if sim.failure is not None or sim.score is None:
        return False, sim.failure or "no score", None
    score = sim.score
    ratio = config.reg_min_ratio if branch == "reg" else config.cls_min_ratio
    what, name = _what(branch), DEFAULTS[branch]
    if score < ratio * base:
        return False, f"{what} {score:.4f} is below {ratio:g} x {name}'s {base:.4f}", score
    return True, f"{what} {score:.4f} ({score / base:.3f} x {name}'s {base:.4f})", score


def stop_reason(
    branch: str, step: int, steps: int, value: float, baseline: float, ratio: float
) -> str | None:
    """Why to stop a candidate whose running score at checkpoint `step` is `value` (the baseline's there:
    `baseline`), or None to go on. NaN goes on: the next step's finiteness check names it as it always has."""
    if not value < ratio * baseline:
        return None
    return (
        f"stopped at step {step} of {steps}: {_what(branch)} {value:.4f} is below {ratio:g} x "
        f"{DEFAULTS[branch]}'s {baseline:.4f} at that step"
    )


def checkpoint_steps(steps: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """The steps (0 < step < steps) at which running scores are taken, for the fractions of `steps`."""
    return tuple(sorted({s for f in fractions if 0 < (s := round(f * steps)) < steps}))


@lru_cache(maxsize=8)
def baseline(branch: str, config: MOSConfig) -> Simulation:
    """The branch default loss's full simulation under `config`, checkpoints included (once per config)."""
    sim = simulate_batch([Loss.named(DEFAULTS[branch])], config)[0]
    if sim.score is None:
        raise RuntimeError(f"the {branch} baseline {DEFAULTS[branch]} failed its own MOS: {sim.failure}")
    return sim


def baseline_score(branch: str, config: MOSConfig) -> float:
    """The branch default loss's MOS score under `config` (once per process and config)."""
    score = baseline(branch, config).score
    assert score is not None
    return score


def _what(branch: str) -> str:
    return "mean IoU" if branch == "reg" else "AP"


def _crashed(exc: Exception) -> str:
    # The text `verdict.run_filter` gives any filter that raises: the same whether alone or batched.
    return f"crashed: {type(exc).__name__}: {exc}"


def _constant_failure(total: Tensor, leaves: list[Tensor]) -> str | None:
    """A total that does not require grad: autograd refuses it, and that refusal has always been the
    candidate's rejection ("crashed: RuntimeError: ..."); None if autograd accepts it after all."""
    try:
        torch.autograd.grad(total, leaves, allow_unused=True)
    except Exception as exc:
        return _crashed(exc)
    return None


class _Batch:
    """Which candidate each row of the stacked state belongs to, and what has become of each candidate."""

    def __init__(self, count: int, steps: int, config: MOSConfig, stop: Simulation | None):
        self.rows = list(range(count))
        self.done: list[Simulation | None] = [None] * count
        self.values: list[list[float]] = [[] for _ in range(count)]
        self.marks = checkpoint_steps(steps, config.stop_checkpoints)
        self.steps = steps
        self.stop = stop

    def fail(self, row: int, why: str) -> None:
        c = self.rows[row]
        self.done[c] = Simulation(None, why, tuple(self.values[c]))

    def finish(self, row: int, score: float) -> None:
        c = self.rows[row]
        self.done[c] = Simulation(score, None, tuple(self.values[c]))

    def checkpoint(self, row: int, step: int, value: float, branch: str, ratio: float) -> bool:
        """Record a running score; True (the candidate stopped) when it is clearly below the baseline's."""
        c = self.rows[row]
        self.values[c].append(value)
        if self.stop is None:
            return False
        k = len(self.values[c]) - 1
        if k >= len(self.stop.checkpoints):
            return False
        why = stop_reason(branch, step, self.steps, value, self.stop.checkpoints[k], ratio)
        if why is None:
            return False
        self.done[c] = Simulation(None, why, tuple(self.values[c]), stopped=True)
        return True

    def keep(self, live: list[int], *states: Tensor) -> list[Tensor]:
        """The states restricted to the rows in `live` (the order kept); the candidates map follows."""
        if len(live) == len(self.rows):
            return list(states)
        self.rows = [self.rows[r] for r in live]
        index = torch.tensor(live, dtype=torch.long)
        return [s.detach().index_select(0, index) for s in states]

    def results(self) -> list[Simulation]:
        assert all(d is not None for d in self.done)
        return [d for d in self.done if d is not None]


@lru_cache(maxsize=8)
def _cls_targets(branch: str, config: MOSConfig) -> tuple[dict[str, Tensor], Tensor | None, float]:
    """Fixed loss inputs for the training set, the alpha_t weights and the normaliser (sigmoid)."""
    p = cls_problem(config)
    n, k = p.train_x.shape[0], config.cls_classes
    if branch == "cls-softmax":
        return softmax_inputs(torch.empty(n, k + 1), p.train_labels, p.train_quality), None, float(n)
    inputs = sigmoid_inputs(torch.empty(n, k), p.train_labels, p.train_quality)
    alpha = FOCAL_ALPHA * inputs["PY"] + (1 - FOCAL_ALPHA) * inputs["NY"]
    # One-stage detectors normalise the summed loss by the number of positives.
    return inputs, alpha, max(1.0, float(inputs["PY"].sum()))


def _simulate_cls(losses: list[Loss], config: MOSConfig, stop: Simulation | None) -> list[Simulation]:
    p = cls_problem(config)
    branch = losses[0].branch
    softmax = branch == "cls-softmax"
    targets, alpha, norm = _cls_targets(branch, config)
    steps = config.cls_steps
    batch = _Batch(len(losses), steps, config, stop)
    w1, b1, w2, b2 = p.init
    if not softmax:  # K sigmoid outputs, no background column, started at the detectors' prior
        w2, b2 = w2[:, 1:], torch.full_like(b2[1:], PRIOR_BIAS)
    b = len(losses)
    # Biases as [B, 1, width] rows: baddbmm broadcasts them over the samples as addmm does a [width] bias.
    params = [t.expand(b, *t.shape).clone() for t in (w1, b1[None], w2, b2[None])]
    velocity = [torch.zeros_like(t) for t in params]
    n, f = p.train_x.shape
    shape = (n,) if softmax else (n, w2.shape[1])
    total = functools.partial(_cls_total, alpha=alpha, norm=norm)
    seed = _seed(shape, total)
    calls = []  # per candidate: its compiled loss and its arguments, X left to fill per step
    for loss in losses:
        names = loss.inputs
        calls.append((loss.fn, [targets.get(name) for name in names], names.index("X")))
    for step in range(steps):
        for t in params:
            t.requires_grad_(True)
        hidden = torch.tanh(torch.baddbmm(params[1], p.train_x.expand(len(batch.rows), n, f), params[0]))
        logits = torch.baddbmm(params[3], hidden, params[2])
        rows, outs = [], []
        for r, x in enumerate(logits.unbind(0)):
            fn, args, at = calls[batch.rows[r]]
            args[at] = x
            try:
                outs.append(_broadcast(fn(*args), shape))
                rows.append(r)
            except Exception as exc:  # one candidate's crash is its own rejection
                batch.fail(r, _crashed(exc))
            args[at] = None
        values = _cls_values(outs, alpha, norm)
        live, live_outs = [], []
        for r, out, value in zip(rows, outs, values, strict=True):
            if not math.isfinite(value):
                batch.fail(r, f"non-finite loss ({value}) at training step {step} of {steps}")
            elif (
                not out.requires_grad
                and (why := _constant_failure(_cls_total(out, alpha, norm), params)) is not None
            ):
                batch.fail(r, why)
            else:
                live.append(r)
                live_outs.append(out)
        if step in batch.marks and live:
            aps = _test_ap(params, live, p, softmax)
            ratio = config.cls_stop_ratio
            stopped = {
                r for r, ap in zip(live, aps, strict=True) if batch.checkpoint(r, step, ap, branch, ratio)
            }
            live_outs = [o for r, o in zip(live, live_outs, strict=True) if r not in stopped]
            live = [r for r in live if r not in stopped]
        if not live:
            batch.rows = []
            return batch.results()
        grads = _grads(live_outs, seed, total, params)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(params, grads, strict=True)]
        with torch.no_grad():  # SGD with momentum, as torch.optim.SGD (dampening 0), on all tensors at once
            torch._foreach_mul_(velocity, config.cls_momentum)
            torch._foreach_add_(velocity, grads)
            torch._foreach_add_(params, velocity, alpha=-config.cls_lr)
        kept = batch.keep(live, *params, *velocity)
        params, velocity = kept[:4], kept[4:]
    with torch.no_grad():
        finite = torch.stack([t.isfinite().flatten(1).all(1) for t in params]).all(0).tolist()
        aps = _test_ap(params, list(range(len(batch.rows))), p, softmax)
        for r, ok in enumerate(finite):
            if ok:
                batch.finish(r, aps[r])
            else:
                batch.fail(r, f"non-finite weights after {steps} training steps")
    return batch.results()


# Each candidate's total is a fixed linear function of its loss values: (out * alpha).sum() / norm (cls) or
# out.mean() (reg). Its gradient with respect to `out` is therefore a constant, the "seed": computed once
# by autograd through that very formula, it is fed to all the candidates' `out`s in one backward, with the
# bits autograd gave when each total was a node of the graph. The totals' values, needed only for the
# finiteness check, come from one batched reduction outside the graph (each row reduced as alone).


def _broadcast(out: Tensor, shape: tuple[int, ...]) -> Tensor:
    """`out` broadcast to `shape`, skipping the no-op expand (and its autograd node) when it already is."""
    if isinstance(out, Tensor) and out.shape == shape:
        return out
    return torch.broadcast_to(out, shape)


def _cls_total(out: Tensor, alpha: Tensor | None, norm: float) -> Tensor:
    """One candidate's training loss: its loss values, alpha-weighted (sigmoid), summed, normalised."""
    return (out if alpha is None else out * alpha).sum() / norm


def _seed(shape: tuple[int, ...], total: Callable[[Tensor], Tensor]) -> Tensor:
    """d total(out) / d out, by autograd through the very formula (see above)."""
    ones = torch.ones(shape, dtype=DTYPE, requires_grad=True)
    (seed,) = torch.autograd.grad(total(ones), ones)
    return seed


def _same_dtype(outs: list[Tensor]) -> bool:
    return all(o.dtype == DTYPE for o in outs)


def _cls_values(outs: list[Tensor], alpha: Tensor | None, norm: float) -> list[float]:
    with torch.no_grad():
        if not outs:
            return []
        if not _same_dtype(outs):  # a loss of another dtype (not one the compiler makes): one by one
            return [float(_cls_total(o, alpha, norm)) for o in outs]
        stacked = torch.stack(outs)
        weighted = stacked if alpha is None else stacked * alpha
        return (weighted.sum(dim=tuple(range(1, stacked.dim()))) / norm).tolist()


def _reg_values(outs: list[Tensor]) -> list[float]:
    with torch.no_grad():
        if not outs:
            return []
        if not _same_dtype(outs):
            return [float(o.mean()) for o in outs]
        return torch.stack(outs).mean(dim=1).tolist()


def _grads(
    outs: list[Tensor], seed: Tensor, total: Callable[[Tensor], Tensor], leaves: list[Tensor]
) -> tuple[Tensor | None, ...]:
    """The gradient of the sum of the candidates' totals: `seed` is each `out`'s gradient; an `out` of
    another dtype (not one the compiler makes) gets its `total` built in the graph, as it always had."""
    roots = [o if o.dtype == seed.dtype else total(o) for o in outs if o.requires_grad]
    if not roots:
        return (None,) * len(leaves)
    seeds = [seed if r.dtype == seed.dtype and r.dim() else None for r in roots]
    return torch.autograd.grad(roots, leaves, seeds, allow_unused=True)


def _reaches(total: Tensor, inputs: tuple[Tensor, ...]) -> bool:
    """Whether the autograd graph of `total` leads back to any of `inputs` (the shared batched tensors
    whose rows the candidates read): autograd's own test for a None gradient, for one candidate."""
    targets = {t.grad_fn for t in inputs if t.grad_fn is not None}
    stack, seen = [total.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        if node in targets:
            return True
        seen.add(node)
        stack.extend(n for n, _ in node.next_functions)
    return False


def _test_ap(params: list[Tensor], rows: list[int], p: ClsProblem, softmax: bool) -> list[float]:
    """The test-set AP of the candidates in `rows` with their current weights."""
    with torch.no_grad():
        w1, b1, w2, b2 = params if len(rows) == params[0].shape[0] else (t[rows] for t in params)
        x = p.test_x.expand(len(rows), *p.test_x.shape)
        # matmul, then the bias: the order the single-candidate formula has always used
        logits = torch.bmm(torch.tanh(torch.bmm(x, w1) + b1), w2) + b2
        scores = torch.softmax(logits, dim=2)[..., 1:] if softmax else torch.sigmoid(logits)
        return batched_ap(scores, p)


def coco_style_ap(scores: Tensor, p: ClsProblem) -> float:
    """Mean over foreground classes and IoU thresholds of the non-interpolated AP on the test set.

    A sample of class k is a true positive at threshold t if its quality >= t; otherwise a detection of it
    is a false positive, as a badly localised box is in COCO AP.
    """
    return batched_ap(scores[None], p)[0]


def batched_ap(scores: Tensor, p: ClsProblem) -> list[float]:
    """`coco_style_ap` of each candidate's scores [B, n, K] at once, value for value the same: every step
    acts per candidate, class and threshold row, in the order the single-candidate formula takes.

    Only a class's positives can be hits, so the precision is computed at their ranks alone and scattered
    into zero rows of length n: the rows summed are exactly the formula's precision x hits rows (the
    cumulative hit count at a positive's rank is the count among the positives ranked before it)."""
    b, n, k = scores.shape
    classes = torch.arange(1, k + 1)
    is_class = p.test_labels[:, None] == classes  # [n, K]
    positives = is_class.sum(0)  # [K], the same for every candidate
    present = torch.nonzero(positives).squeeze(1)
    if len(present) == 0:
        return [0.0] * b
    order = descending_order(scores.index_select(2, present).transpose(1, 2))  # [B, K', n]
    rank = torch.empty_like(order).scatter_(2, order, torch.arange(n).expand_as(order))
    # Each present class's positives (sample indices), padded to the largest count with rank n (last).
    members = is_class[:, present].T  # [K', n]
    most = int(positives.max())
    slot = torch.argsort(~members, dim=1, stable=True)[:, :most]  # the positives first, in sample order
    valid = torch.gather(members, 1, slot)  # [K', P]
    ranks = torch.where(valid, torch.gather(rank, 2, slot.expand(b, -1, -1)), n)
    ranks = _sorted_ints(ranks)  # each row's positives in rank order, padding last
    at = ranks.clamp(max=n - 1)
    quality = p.test_quality[torch.gather(order, 2, at)]  # [B, K', P]
    thresholds = IOU_THRESHOLDS.to(DTYPE)[:, None]
    hits = ((ranks < n)[:, :, None, :] & (quality[:, :, None, :] >= thresholds)).to(DTYPE)  # [B, K', T, P]
    precision = hits.cumsum(dim=3) / (ranks + 1).to(DTYPE)[:, :, None, :]
    rows = torch.zeros((b, len(present), len(thresholds), n), dtype=DTYPE)
    rows.scatter_add_(3, at[:, :, None, :].expand_as(hits), precision * hits)  # 0 + v is v; pads add 0
    aps = rows.sum(dim=3) / positives[present][None, :, None].to(DTYPE)  # [B, K', T]
    return aps.flatten(1).mean(dim=1).tolist()


def descending_order(scores: Tensor) -> Tensor:
    """`torch.argsort(scores, dim=-1, descending=True, stable=True)`, the same indices, faster.

    For finite, non-negative scores (probabilities) the float bits order like the values, so a key of
    (bits reversed, index) is unique and sorts into exactly the stable descending order; numpy's integer
    sort is several times faster than torch's stable float sort. Anything else takes torch's sort."""
    scores = scores.contiguous()
    n = scores.shape[-1]
    if scores.numel() == 0 or n >= 2**31 or not bool((scores.isfinite() & (scores >= 0)).all()):
        return torch.argsort(scores, dim=-1, descending=True, stable=True)
    bits = (scores + 0.0).view(torch.int32).to(torch.int64)  # + 0.0 makes -0.0 the 0.0 it equals
    keys = ((0x7F800000 - bits) << 32) | torch.arange(n)
    return _sorted_ints(keys) & 0xFFFFFFFF


def _sorted_ints(values: Tensor) -> Tensor:
    """int64 values sorted along the last axis (values only: equal ones are interchangeable)."""
    return torch.from_numpy(np.sort(values.numpy(), axis=-1))


def _simulate_reg(losses: list[Loss], config: MOSConfig, stop: Simulation | None) -> list[Simulation]:
    prob = reg_problem(config)
    steps = config.reg_steps
    batch = _Batch(len(losses), steps, config, stop)
    deltas = torch.zeros((len(losses), *prob.anchors.shape), dtype=DTYPE)
    m, v = torch.zeros_like(deltas), torch.zeros_like(deltas)
    (beta1, beta2), eps = ADAM_BETAS, ADAM_EPS
    shape = (prob.anchors.shape[0],)
    seed = _seed(shape, Tensor.mean)
    terms = {"I": 0, "U": 1, "E": 2}
    calls = [(loss.fn, [terms[name] for name in loss.inputs]) for loss in losses]
    for step in range(steps):
        deltas.requires_grad_(True)
        boxes = _box_inputs(prob, deltas)
        per_row = list(zip(*(t.unbind(0) for t in boxes), strict=True))
        rows, outs = [], []
        for r, iue in enumerate(per_row):
            fn, picks = calls[batch.rows[r]]
            try:
                outs.append(_broadcast(fn(*(iue[j] for j in picks)), shape))
                rows.append(r)
            except Exception as exc:  # one candidate's crash is its own rejection
                batch.fail(r, _crashed(exc))
        values = _reg_values(outs)
        ious: list[float] | None = None  # the mean IoU of each row's current boxes, when first needed
        live, live_outs = [], []
        for r, out, value in zip(rows, outs, values, strict=True):
            if not math.isfinite(value):
                batch.fail(r, f"non-finite loss ({value}) at optimisation step {step} of {steps}")
                continue
            if not out.requires_grad:
                why = _constant_failure(out.mean(), [deltas])
                if why is not None:
                    batch.fail(r, why)
                    continue
            # A loss that does not depend on the boxes: nothing will ever move. Its graph is the same at
            # every step (compiled losses are straight-line code), so step 0 tells.
            if not out.requires_grad or (step == 0 and not _reaches(out, boxes)):
                ious = ious if ious is not None else _mean_ious(boxes)
                batch.finish(r, ious[r])
                continue
            if step in batch.marks:
                ious = ious if ious is not None else _mean_ious(boxes)
                if batch.checkpoint(r, step, ious[r], "reg", config.reg_stop_ratio):
                    continue
            live.append(r)
            live_outs.append(out)
        if not live:
            batch.rows = []
            return batch.results()
        (grad,) = _grads(live_outs, seed, Tensor.mean, [deltas])
        if grad is None:  # unreachable after the step-0 check, kept so that no loss can crash the batch
            grad = torch.zeros_like(deltas)
        with torch.no_grad():  # Adam, as torch.optim.Adam with default betas
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v / (1 - beta2 ** (step + 1))).sqrt_().add_(eps)
            deltas.addcdiv_(m, denom, value=-config.reg_lr / (1 - beta1 ** (step + 1)))
        deltas, m, v = batch.keep(live, deltas, m, v)
    with torch.no_grad():
        deltas = deltas.detach()
        finite = deltas.isfinite().flatten(1).all(1).tolist()
        ious = _mean_ious(_box_inputs(prob, deltas))
        for r, ok in enumerate(finite):
            if ok:
                batch.finish(r, ious[r])
            else:
                batch.fail(r, f"non-finite box parameters after {steps} steps")
    return batch.results()


def _mean_ious(boxes: tuple[Tensor, Tensor, Tensor]) -> list[float]:
    """Each row's mean IoU, I / (U + eps), reduced per row as a single candidate's."""
    with torch.no_grad():
        i, u, _ = boxes
        return (i.detach() / u.detach()).mean(dim=1).tolist()


def _box_inputs(prob: RegProblem, deltas: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """I, U + eps, E + eps of the decoded boxes (Faster R-CNN decoding of (dx, dy, dw, dh) on each start
    box) against their targets, for deltas [N, 4] or a batch [B, N, 4]; the x and y axes are computed
    together to keep the autograd graph short. Equal to `probes.box_terms` on the decoded boxes."""
    anchors = prob.anchors
    centre = anchors[:, :2] + deltas[..., :2] * anchors[:, 2:]
    half = 0.5 * anchors[:, 2:] * torch.exp(deltas[..., 2:].clamp(max=MAX_DW))
    lo, hi = centre - half, centre + half
    t_lo, t_hi = prob.targets[:, :2], prob.targets[:, 2:]
    overlap = (torch.minimum(hi, t_hi) - torch.maximum(lo, t_lo)).clamp(min=0)
    inter = overlap[..., 0] * overlap[..., 1]
    size = 2.0 * half
    t_size = t_hi - t_lo
    union = size[..., 0] * size[..., 1] + t_size[:, 0] * t_size[:, 1] - inter
    span = torch.maximum(hi, t_hi) - torch.minimum(lo, t_lo)
    return inter, union + BOX_EPS, span[..., 0] * span[..., 1] + BOX_EPS
