"""The fast paths of batched MOS against the plain formulas they replace, value for value: the sort of the
AP, the AP on positives only, the constant gradient seed of the totals and the hand-rolled optimisers."""

from __future__ import annotations

import pytest
import torch

from autoloss.checks import MOSConfig
from autoloss.checks.mos import (
    ADAM_BETAS,
    ADAM_EPS,
    IOU_THRESHOLDS,
    _cls_total,
    _grads,
    _seed,
    batched_ap,
    descending_order,
)
from autoloss.checks.mos_data import cls_problem
from autoloss.checks.probes import DTYPE


def plain_ap(scores, p):
    """The AP formula on every sample (the previous `batched_ap`): sort, hits per threshold, precision."""
    b, n, k = scores.shape
    classes = torch.arange(1, k + 1)
    positives = (p.test_labels[:, None] == classes).sum(0)
    present = torch.nonzero(positives).squeeze(1)
    if len(present) == 0:
        return [0.0] * b
    order = torch.argsort(scores.index_select(2, present), dim=1, descending=True, stable=True)
    order = order.transpose(1, 2).contiguous()
    is_k = p.test_labels[order] == classes[present][None, :, None]
    quality = p.test_quality[order]
    thresholds = IOU_THRESHOLDS.to(DTYPE)[:, None]
    hits = (is_k[:, :, None, :] & (quality[:, :, None, :] >= thresholds)).to(DTYPE).contiguous()
    precision = hits.cumsum(dim=3) / torch.arange(1, n + 1, dtype=DTYPE)
    aps = (precision * hits).sum(dim=3) / positives[present][None, :, None].to(DTYPE)
    return aps.flatten(1).mean(dim=1).tolist()


def score_cases(b, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    uniform = torch.rand(b, n, k, generator=g)
    yield "uniform", uniform
    yield "ties", (uniform * 4).round() / 4  # many equal scores: the stable order decides
    yield "zeros", torch.softmax(30 * torch.randn(b, n, k + 1, generator=g), dim=2)[..., 1:]  # 0, denormals
    yield "saturated", torch.sigmoid(60 * torch.randn(b, n, k, generator=g))  # exact 0 and 1
    signed = uniform.clone()
    signed[..., 0] = -0.0  # equal to 0.0 for the sort
    yield "negative zero", signed
    nan = uniform.clone()
    nan[0, :3, 0] = float("nan")  # not a probability: torch's own sort
    yield "nan", nan
    yield "negative", uniform - 0.5


@pytest.mark.parametrize("n", [1, 5, 53, 1024])
def test_descending_order_is_torchs_stable_descending_argsort(n):
    for name, scores in score_cases(3, n, 4, seed=n):
        s = scores.transpose(1, 2)
        want = torch.argsort(s, dim=-1, descending=True, stable=True)
        assert torch.equal(descending_order(s), want), name


def test_descending_order_by_hand():
    s = torch.tensor([[0.2, 0.7, 0.2, 0.0, 0.7, -0.0]])
    assert descending_order(s).tolist() == [[1, 4, 0, 2, 3, 5]]  # ties keep the sample order


@pytest.mark.parametrize(
    "config",
    [MOSConfig(), MOSConfig(cls_test=53, cls_classes=3), MOSConfig(cls_test=200, cls_classes=6, seed=4)],
)
def test_ap_on_positives_equals_the_formula_on_every_sample(config):
    p = cls_problem(config)
    for name, scores in score_cases(5, p.test_x.shape[0], config.cls_classes, seed=config.cls_test):
        assert batched_ap(scores, p) == plain_ap(scores, p), name


@pytest.mark.parametrize("alpha", [None, "sigmoid"])
def test_the_seed_gives_the_gradient_of_the_totals_in_the_graph(alpha):
    # Three candidates' outputs of a tiny model: the backward from the seeds equals the backward from the
    # sum of the totals, bit for bit, and the parameters that no output reaches get None in both.
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 6, 4, generator=g, dtype=DTYPE).requires_grad_(True)
    unused = torch.zeros(2, requires_grad=True)
    x = torch.randn(3, 37, 6, generator=g, dtype=DTYPE)
    weights = torch.rand(37, 4, generator=g, dtype=DTYPE) if alpha else None
    shape = (37, 4) if alpha else (37,)
    norm = 11.0
    fns = [torch.sigmoid, lambda t: torch.log(torch.softmax(t, 1) + 1e-20) * t, torch.tanh]

    def outputs():
        rows = torch.bmm(x, w).unbind(0)
        return [f(r) if alpha else f(r).sum(1) for f, r in zip(fns, rows, strict=True)]

    def total(o):
        return _cls_total(o, weights, norm)

    seed = _seed(shape, lambda o: _cls_total(o, weights, norm))
    outs = outputs()
    want = torch.autograd.grad(torch.stack([total(o) for o in outs]).sum(), [w, unused], allow_unused=True)
    got = _grads(outputs(), seed, total, [w, unused])
    assert torch.equal(got[0], want[0]) and got[1] is None and want[1] is None
    # An output of another dtype goes through its own total in the graph: the same gradient as before.
    outs = outputs()
    want = torch.autograd.grad(torch.stack([total(o) for o in [outs[0].double(), *outs[1:]]]).sum(), w)
    outs = outputs()
    assert torch.equal(_grads([outs[0].double(), *outs[1:]], seed, total, [w])[0], want[0])
    assert _grads([torch.ones(shape)], seed, total, [w]) == (None,)  # nothing needs a gradient


def test_the_reg_seed_is_the_gradient_of_the_mean():
    d = torch.randn(2, 13, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    outs = [torch.exp(d[0]) / 3.0, d[1] * d[1]]
    want = torch.autograd.grad(torch.stack([o.mean() for o in outs]).sum(), d, retain_graph=True)[0]
    assert torch.equal(_grads(outs, _seed((13,), lambda o: o.mean()), lambda o: o.mean(), [d])[0], want)


def test_the_momentum_update_is_torch_optim_sgds():
    # The update `_simulate_cls` applies (foreach ops over the stacked tensors) against torch.optim.SGD.
    g = torch.Generator().manual_seed(2)
    params = [torch.randn(3, 8, 5, generator=g), torch.randn(3, 1, 5, generator=g)]
    reference = [t.clone().requires_grad_(True) for t in params]
    sgd = torch.optim.SGD(reference, lr=0.5, momentum=0.9)
    velocity = [torch.zeros_like(t) for t in params]
    for _ in range(4):
        grads = [torch.randn(t.shape, generator=g) for t in params]
        torch._foreach_mul_(velocity, 0.9)
        torch._foreach_add_(velocity, grads)
        torch._foreach_add_(params, velocity, alpha=-0.5)
        for t, grad in zip(reference, grads, strict=True):
            t.grad = grad.clone()
        sgd.step()
    assert all(torch.equal(a, b.detach()) for a, b in zip(params, reference, strict=True))


def test_the_adam_update_is_torch_optim_adams():
    # The update `_simulate_reg` applies against torch.optim.Adam (default betas and eps, single-tensor).
    g = torch.Generator().manual_seed(3)
    deltas = torch.randn(3, 16, 4, generator=g)
    reference = deltas.clone().requires_grad_(True)
    adam = torch.optim.Adam([reference], lr=0.05, foreach=False)
    m, v = torch.zeros_like(deltas), torch.zeros_like(deltas)
    (beta1, beta2), eps = ADAM_BETAS, ADAM_EPS
    for step in range(5):
        grad = torch.randn(deltas.shape, generator=g)
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (v / (1 - beta2 ** (step + 1))).sqrt_().add_(eps)
        deltas.addcdiv_(m, denom, value=-0.05 / (1 - beta1 ** (step + 1)))
        reference.grad = grad.clone()
        adam.step()
        torch.testing.assert_close(deltas, reference.detach(), rtol=0, atol=1e-6)
