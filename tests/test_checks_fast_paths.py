"""The screening's fast paths compute exactly what the plain ones do.

- `evaluator` (the filters' step-by-step evaluation) equals the generated, compiled code bit for bit;
- the shared validity + CPV batch gives every filter the verdict it gets on its own probe;
- the reg probe's shared box graph gives the gradients a graph of one's own gives;
- screening does not depend on how the texts are split into calls or spread over processes.
"""

from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest
import torch

from autoloss.checks import CheckConfig, probe_batch, screen_texts
from autoloss.checks.cpv import cpv
from autoloss.checks.cpv_cls import sigmoid_cpv, softmax_cpv
from autoloss.checks.cpv_reg import reg_cpv
from autoloss.checks.probes import box_terms, forward_backward
from autoloss.expr.codegen import compile_expr, evaluator
from autoloss.loss import Loss
from autoloss.spaces.branches import BRANCHES
from autoloss.spaces.generate import TreeLimits, ramped_half_and_half
from autoloss.spaces.named import NAMED

CONFIG = CheckConfig()


def _trees(branch: str, count: int, seed: int) -> list[Loss]:
    rng = random.Random(seed)
    out = [
        Loss(t, branch) for t in ramped_half_and_half(BRANCHES[branch], rng, count, TreeLimits(max_depth=6))
    ]
    return out + [Loss.named(n) for n, e in NAMED.items() if e.branch == branch]


def _inputs(loss: Loss) -> list[torch.Tensor]:
    probe = probe_batch.probe_batch(loss.branch, CONFIG.probe, CONFIG.cpv).probe
    if loss.branch == "reg":
        i, u, e = box_terms(probe.pred, probe.fixed["target"])
        args = {"I": i, "U": u, "E": e}
    else:
        args = {**probe.fixed, "X": probe.pred}
    return [args[name] for name in loss.inputs]


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical, NaNs in the same places."""
    return (
        a.shape == b.shape
        and torch.equal(a.isnan(), b.isnan())
        and torch.equal(a.nan_to_num(), b.nan_to_num())
    )


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_evaluator_equals_the_compiled_code_bit_for_bit(branch):
    losses = _trees(branch, 300, seed=11)
    if branch == "reg":  # constants alone, constant-only subtrees, a bare input, a signed zero
        losses += [Loss.parse(t, branch) for t in ("I", "Mul(Log(2),I)", "Add(Log(Add(2,3)),U)", "Mul(-0,I)")]
    for loss in losses:
        args = _inputs(loss)
        for optimize in (False, True):
            compiled = compile_expr(loss.expr, loss.inputs, optimize=optimize)(*args)
            stepped = evaluator(loss.expr, loss.inputs, optimize=optimize)(*args)
            assert _same(torch.broadcast_to(compiled, stepped.shape), stepped), (loss.text, optimize)


def test_evaluator_of_a_constant_is_a_tensor_on_the_inputs_dtype():
    x = torch.zeros(3, dtype=torch.float64)
    out = evaluator(Loss.parse("Log(2)", "reg").expr, ("I", "U", "E"))(x, x, x)
    assert out.dtype == torch.float64 and float(out) == pytest.approx(0.6931471805599453)


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_the_shared_batch_gives_each_filter_its_own_probes_verdict(branch):
    """CPV judged on its rows of the shared batch equals CPV on the grid alone (and so on every loss)."""
    grid = probe_batch.cpv_probe(branch, CONFIG.cpv)
    judge = {"cls-softmax": softmax_cpv, "cls-sigmoid": sigmoid_cpv, "reg": reg_cpv}[branch]
    verdicts = set()
    for loss in _trees(branch, 60, seed=3):
        values, grad = forward_backward(loss, grid)
        passed, reason, _ = cpv(loss, CONFIG)
        alone, detail = judge((values, grad), CONFIG.cpv)
        assert (passed, reason) == ((True, detail) if alone is None else (False, alone)), loss.text
        verdicts.add(passed)
        part_values, part_grad = probe_batch.cpv_part(probe_batch.evaluate(loss, CONFIG), loss, CONFIG)
        # Rows are independent, so the stacked batch computes the same numbers up to float32 rounding
        # in vectorised kernels (the position of a row in the batch can change which path computes it).
        torch.testing.assert_close(part_values, values, rtol=1e-5, atol=1e-6, equal_nan=True)
        torch.testing.assert_close(part_grad, grad, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert verdicts == {True, False}  # the panel has losses that pass and losses that fail


def test_the_shared_box_graph_gives_the_gradient_of_a_graph_of_ones_own():
    probe = probe_batch.probe_batch("reg", CONFIG.probe, CONFIG.cpv).probe
    for loss in _trees("reg", 80, seed=5):
        values, grad = forward_backward(loss, probe)  # twice: the shared graph must survive each use
        values2, grad2 = forward_backward(loss, probe)
        leaf = probe.pred.detach().clone().requires_grad_(True)
        i, u, e = box_terms(leaf, probe.fixed["target"])
        args = {"I": i, "U": u, "E": e}
        out = torch.broadcast_to(loss.probe_fn(*(args[n] for n in loss.inputs)), (leaf.shape[0],))
        own = torch.autograd.grad(out.sum(), leaf, allow_unused=True)[0] if out.requires_grad else None
        own = torch.zeros_like(leaf) if own is None else own
        assert _same(values, out.detach()) and _same(grad, own) and _same(grad2, own), loss.text
        assert _same(values2, values)


def _texts(branch: str) -> list[str]:
    return [loss.text for loss in _trees(branch, 150, seed=8)]


@pytest.mark.parametrize("branch", ["cls-sigmoid", "reg"])
def test_screening_does_not_depend_on_chunks_or_processes(branch):
    texts = _texts(branch)
    whole = screen_texts(texts, branch)
    chunks = [r for i in range(0, len(texts), 7) for r in screen_texts(texts[i : i + 7], branch)]
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        parts = list(
            pool.map(screen_texts, [texts[i : i + 40] for i in range(0, len(texts), 40)], [branch] * 4)
        )
    spread = [r for part in parts for r in part]

    def outcome(r):
        return (r["text"], r["stage"], r["reason"], r["key"], r["mos_score"])

    assert [outcome(r) for r in chunks] == [outcome(r) for r in whole]
    assert [outcome(r) for r in spread] == [outcome(r) for r in whole]
    assert any(r["stage"] == "passed" for r in whole) and any(r["stage"] == "cpv" for r in whole)
