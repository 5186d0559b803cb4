"""The operator registry: every op finite in its domain, the reference guards, the S-curve scaling."""

from __future__ import annotations

import math

import pytest
import torch

from autoloss.ops import OPS, Op, _register, op

# Inputs inside every op's domain: positive (Log, Sqrt) and moderate (Exp), shaped [N, C].
IN_DOMAIN = torch.rand(6, 4, dtype=torch.float64) * 3 + 0.1


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_is_finite_with_gradient_in_domain(name):
    o = OPS[name]
    args = [IN_DOMAIN.clone().requires_grad_(True) for _ in range(o.arity)]
    out = o.torch_fn(*args)
    assert torch.isfinite(out).all()
    out.sum().backward()
    for a in args:
        assert torch.isfinite(a.grad).all()
    # One record carries everything the other layers read.
    assert o.doc and o.cost > 0 and o.source.count("{") >= o.arity


def test_registry_has_the_twenty_reference_ops():
    assert len(OPS) == 20


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        _register(Op("Add", 2, None, None, "", 1.0, ""))


def test_unknown_op_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid operators: Abs, Add"):
        op("Foo")


@pytest.mark.parametrize("name", ["Serf", "Salf", "Sgdf"])
def test_s_curves_match_sigmoid_value_and_slope_at_zero(name):
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    y = OPS[name].torch_fn(x)
    y.backward()
    assert y.item() == pytest.approx(0.5, abs=1e-12)
    assert x.grad.item() == pytest.approx(0.25, abs=1e-12)


@pytest.mark.parametrize("name", ["Serf", "Salf", "Sgdf"])
def test_s_curves_saturate_to_zero_and_one(name):
    y = OPS[name].torch_fn(torch.tensor([-2000.0, 2000.0], dtype=torch.float64))
    assert y[0].item() == pytest.approx(0.0, abs=1e-6)
    assert y[1].item() == pytest.approx(1.0, abs=1e-6)


def test_reference_guards():
    # Div adds 1e-20 to the denominator with no sign handling: 1/0 is 1e20, not inf.
    assert (
        OPS["Div"].torch_fn(torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
        == 1e20
    )
    # Log adds 1e-20: log(0) is log(1e-20) ~ -46.05; a negative argument is NaN (a rejection, not a crash).
    assert OPS["Log"].torch_fn(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(
        math.log(1e-20)
    )
    assert torch.isnan(OPS["Log"].torch_fn(torch.tensor(-1.0)))
    # Exp clamps at 88 so it never overflows float32.
    assert OPS["Exp"].torch_fn(torch.tensor(1000.0)).item() == pytest.approx(math.exp(88), rel=1e-6)
    assert torch.isfinite(OPS["Exp"].torch_fn(torch.tensor(1000.0)))
    assert torch.isnan(OPS["Sqrt"].torch_fn(torch.tensor(-1.0)))


def test_softmax_and_dot_work_over_the_class_axis():
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(OPS["Softmax"].torch_fn(x).sum(dim=1), torch.ones(2))
    assert torch.allclose(OPS["Softmax"].torch_fn(x)[1], torch.full((3,), 1 / 3))
    assert OPS["Dot"].torch_fn(x, x).tolist() == [14.0, 0.0]  # 1 + 4 + 9, and 0
    assert OPS["Dot"].torch_fn(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])).item() == 11.0


def test_softplus_and_sgdf_definitions():
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)
    assert torch.allclose(OPS["Softplus"].torch_fn(x), torch.log1p(torch.exp(x)))
    gd = 2 * torch.atan(torch.tanh(math.pi * x / 8))
    assert torch.allclose(OPS["Sgdf"].torch_fn(x), ((2 / math.pi) * gd + 1) / 2)
    salf = ((x / 2) / torch.sqrt(1 + (x / 2) ** 2) + 1) / 2
    assert torch.allclose(OPS["Salf"].torch_fn(x), salf)
