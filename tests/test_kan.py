"""Tests for kan.KANLinear: shapes, gradients, basis correctness, fitting, persistence."""

import io
import math

import pytest
import torch
from torch import nn

from kan import KANLinear, _GaussianRBF, _UniformBSpline, b_spline_basis

BASES = ("bspline", "rbf")


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("lead", [(5,), (2, 3), ()])
def test_output_shape(basis, lead):
    layer = KANLinear(7, 4, basis=basis)
    out = layer(torch.randn(*lead, 7))
    assert out.shape == (*lead, 4)
    assert torch.isfinite(out).all()


def test_wrong_input_width_and_bad_args_are_rejected():
    layer = KANLinear(7, 4)
    with pytest.raises(ValueError, match="last dimension 7"):
        layer(torch.randn(3, 6))
    with pytest.raises(ValueError, match="basis"):
        KANLinear(3, 2, basis="chebyshev")
    with pytest.raises(ValueError, match="grid_range"):
        KANLinear(3, 2, grid_range=(1.0, -1.0))


@pytest.mark.parametrize("basis", BASES)
def test_gradient_reaches_every_parameter_and_the_input(basis):
    torch.manual_seed(0)
    layer = KANLinear(6, 3, basis=basis)
    x = (torch.randn(16, 6) * 1.5).requires_grad_()
    layer(x).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("spline_order", [1, 2, 3, 4])
def test_fast_bspline_matches_reference_cox_de_boor(spline_order):
    torch.manual_seed(0)
    layer = KANLinear(5, 2, grid_size=4, spline_order=spline_order, grid_range=(-1.5, 2.5))
    x = torch.linspace(-6, 6, 301).unsqueeze(-1).expand(-1, 5)  # inside, at the edges, outside
    fast = layer.basis_functions(x)  # (batch, n_basis, in)
    ref = b_spline_basis(x, layer.grid, spline_order).transpose(1, 2)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("spline_order", [1, 2, 3])
def test_bspline_partition_of_unity_inside_grid_and_zero_far_outside(spline_order):
    layer = KANLinear(3, 2, grid_size=5, spline_order=spline_order, grid_range=(-2.0, 2.0))
    inside = torch.linspace(-2.0, 2.0, 201).unsqueeze(-1).expand(-1, 3)
    sums = layer.basis_functions(inside).sum(1)  # (batch, in)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    # Support ends spline_order cells (h = 0.8) beyond the range.
    h = 4.0 / 5
    far = torch.tensor([[-2.0 - spline_order * h - 0.01] * 3, [2.0 + spline_order * h + 0.01] * 3, [50.0] * 3])
    assert layer.basis_functions(far).abs().max() == 0


def test_out_of_range_input_still_carries_signal_through_base_branch():
    torch.manual_seed(0)
    layer = KANLinear(1, 1)
    x = torch.tensor([[10.0], [20.0]], requires_grad=True)
    y = layer(x)
    expected = nn.functional.silu(x) @ layer.base_weight.t() + layer.bias
    torch.testing.assert_close(y, expected)
    y.sum().backward()
    assert x.grad.abs().min() > 0


@pytest.mark.parametrize("spline_order,n_cells", [(1, 7), (2, 9), (3, 11), (4, 13)])
def test_bspline_custom_backward_matches_numerical_gradient(spline_order, n_cells):
    torch.manual_seed(0)
    u = (torch.rand(6, 4, dtype=torch.float64) * (n_cells + 2) - 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: _UniformBSpline.apply(v, spline_order, n_cells), (u,))


def test_rbf_custom_backward_matches_numerical_gradient():
    torch.manual_seed(0)
    u = (torch.rand(6, 4, dtype=torch.float64) * 10 - 1).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: _GaussianRBF.apply(v, 8), (u,))


@pytest.mark.parametrize("basis", BASES)
def test_layer_gradcheck_in_double(basis):
    torch.manual_seed(0)
    layer = KANLinear(3, 2, basis=basis).double()
    x = (torch.randn(5, 3, dtype=torch.float64) * 1.5).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))


def _fit(model, x, y, steps=300, lr=0.02):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return nn.functional.mse_loss(model(x), y).item()


@pytest.mark.parametrize("basis", BASES)
def test_fits_sine_much_better_than_linear(basis):
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 200).unsqueeze(-1)
    y = torch.sin(math.pi * x)
    kan_mse = _fit(KANLinear(1, 1, grid_size=8, basis=basis), x, y)
    linear_mse = _fit(nn.Linear(1, 1), x, y)
    assert kan_mse < 0.05, kan_mse
    assert kan_mse < 0.2 * linear_mse, (kan_mse, linear_mse)


@pytest.mark.parametrize("basis", BASES)
def test_state_dict_round_trip_keeps_grid_and_outputs(basis):
    torch.manual_seed(0)
    src = KANLinear(4, 3, grid_range=(-3.0, 3.0), basis=basis)
    assert "grid" in src.state_dict()
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    dst = KANLinear(4, 3, grid_range=(-3.0, 3.0), basis=basis)
    dst.load_state_dict(torch.load(buf))
    torch.testing.assert_close(dst.grid, src.grid)
    x = torch.randn(8, 4) * 2
    torch.testing.assert_close(dst(x), src(x))


def test_safetensors_round_trip_keeps_grid():
    safetensors_torch = pytest.importorskip("safetensors.torch")
    src = KANLinear(4, 3, grid_range=(-2.5, 1.5))
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    loaded = safetensors_torch.load(safetensors_torch.save(state))
    dst = KANLinear(4, 3)  # default range: the loaded grid must replace it
    dst.load_state_dict(loaded)
    torch.testing.assert_close(dst.grid, src.grid)
    x = torch.randn(8, 4)
    torch.testing.assert_close(dst(x), src(x))


def test_reset_parameters_restores_a_sensible_init():
    layer = KANLinear(64, 32)
    with torch.no_grad():  # what transformers' _init_weights does to an nn.Linear-like weight
        layer.base_weight.normal_(0, 0.02)
        layer.spline_weight.zero_()
    layer.reset_parameters()
    bound = 1 / math.sqrt(64)
    assert layer.base_weight.abs().max() <= bound
    assert layer.base_weight.std() > 0.5 * bound / math.sqrt(3)  # U(-b, b) has std b/sqrt(3)
    assert 0 < layer.spline_weight.abs().max() <= 0.1 * bound


def test_regularization_loss_is_finite_positive_and_differentiable():
    torch.manual_seed(0)
    layer = KANLinear(5, 3)
    reg = layer.regularization_loss()
    assert reg.dim() == 0 and torch.isfinite(reg) and reg > 0
    reg.backward()
    assert layer.spline_weight.grad is not None and torch.isfinite(layer.spline_weight.grad).all()
    assert layer.spline_weight.grad.abs().sum() > 0
    only_l1 = layer.regularization_loss(regularize_activation=1.0, regularize_entropy=0.0)
    expected_l1 = layer.spline_weight.abs().mean(1).sum()
    torch.testing.assert_close(only_l1, expected_l1)
    with torch.no_grad():
        layer.spline_weight.zero_()
    assert torch.isfinite(layer.regularization_loss()) and layer.regularization_loss() == 0
