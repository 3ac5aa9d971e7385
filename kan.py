"""Kolmogorov-Arnold Network (KAN) layer, a drop-in replacement for ``nn.Linear``.

A KAN layer puts a learnable 1-D function on every input-output edge instead of a scalar
weight. Following efficient-kan (Blealtan), each edge function is a fixed nonlinearity plus a
learnable spline, and the sum over inputs is two matrix products::

    y = base_activation(x) @ W_base.T  +  basis(x).flatten(-2) @ W_spline.flatten(1).T  (+ bias)

``basis(x)`` evaluates, for every input feature, ``n_basis`` basis functions on a grid:

* ``basis="bspline"`` (default): B-splines of order ``spline_order`` on a uniform grid of
  ``grid_size`` cells over ``grid_range``, extended by ``spline_order`` cells on each side
  (``n_basis = grid_size + spline_order``), computed with a vectorised Cox-de Boor recursion.
* ``basis="rbf"``: Gaussian radial basis functions as in FastKAN (Li, 2024), ``n_basis`` centres
  spread evenly over ``grid_range``; fewer tensor operations, so cheaper on CPU.

Inputs outside the grid
-----------------------
B-splines have compact support: on ``[grid_range[0], grid_range[1]]`` they sum to 1 (partition of
unity); in the ``spline_order`` extension cells on each side (``[-4.4, -2)`` and ``(2, 4.4]`` for
the defaults) they fade out; beyond that every basis value is exactly 0, so the spline branch
contributes nothing and has zero gradient there. The base branch ``base_activation(x) @ W_base.T``
is defined everywhere, so an out-of-range input still carries signal (and gradient) through it.
Gaussian RBFs decay smoothly instead of vanishing exactly; the base branch plays the same role.

Default grid range
------------------
``(-2, 2)``. The model's expert inputs are LayerNorm-ed (about zero mean, unit variance per
sample), so about 95% of values lie in [-2, 2]; with 5 cells that is a resolution of 0.8. The
cubic extension cells still cover the tails out to +-4.4, and ``(-3, 3)`` would buy the last few
percent of coverage at a coarser 1.2 per cell.

Only torch is imported: this file ships in the Hub repo.
"""

import math
from typing import Tuple, Type

import torch
import torch.nn.functional as F
from torch import nn

BASIS_TYPES = ("bspline", "rbf")


def make_grid(
    in_features: int, grid_size: int, spline_order: int, grid_range: Tuple[float, float], basis: str
) -> torch.Tensor:
    """Build the per-feature grid.

    Parameters
    ----------
    in_features, grid_size, spline_order : int
    grid_range : (float, float)
        ``(low, high)`` of the region the grid covers.
    basis : {"bspline", "rbf"}

    Returns
    -------
    torch.Tensor
        ``"bspline"``: knots, shape ``(in_features, grid_size + 2 * spline_order + 1)``, uniform
        with step ``h = (high - low) / grid_size``, from ``low - spline_order * h`` to
        ``high + spline_order * h``.
        ``"rbf"``: centres, shape ``(in_features, grid_size + spline_order)``, from ``low`` to
        ``high`` inclusive.
    """
    low, high = float(grid_range[0]), float(grid_range[1])
    if basis == "bspline":
        h = (high - low) / grid_size
        knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * h + low
    else:
        knots = torch.linspace(low, high, grid_size + spline_order, dtype=torch.float32)
    return knots.expand(in_features, -1).contiguous()


def b_spline_basis(x: torch.Tensor, grid: torch.Tensor, spline_order: int) -> torch.Tensor:
    """Reference B-spline basis by the textbook Cox-de Boor recursion (any knot spacing).

    Slow but obviously correct (it is efficient-kan's ``b_splines``); the layer uses the faster
    uniform-grid version and the tests compare the two.

    Parameters
    ----------
    x : torch.Tensor, shape (batch, in_features)
    grid : torch.Tensor, shape (in_features, n_knots)
    spline_order : int

    Returns
    -------
    torch.Tensor, shape (batch, in_features, n_knots - 1 - spline_order)
    """
    x = x.unsqueeze(-1)  # (batch, in, 1)
    bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)  # (batch, in, n_knots - 1)
    for k in range(1, spline_order + 1):
        left = (x - grid[:, : -(k + 1)]) / (grid[:, k:-1] - grid[:, : -(k + 1)]) * bases[..., :-1]
        right = (grid[:, k + 1 :] - x) / (grid[:, k + 1 :] - grid[:, 1:-k]) * bases[..., 1:]
        bases = left + right  # (batch, in, n_knots - 1 - k)
    return bases


def _uniform_b_spline(u: torch.Tensor, spline_order: int, n_cells: int, with_derivative: bool):
    """B-splines on integer knots 0, 1, ..., n_cells (grid units), and optionally d/du.

    With knot spacing 1 the Cox-de Boor step is
    ``B[j,k] = (w_j * B[j,k-1] + (k + 1 - w_j) * B[j+1,k-1]) / k`` with ``w_j = u - j``, i.e.
    ``(w_j * (B[j] - B[j+1]) + (k + 1) * B[j+1]) / k``, and the derivative of the last order is
    ``B[j,K-1] - B[j+1,K-1]``, the difference the last step computes anyway.

    Speed notes (CPU, these tensors are small so the number of passes is what counts):
    the basis index sits in the middle, ``(batch, n, in)``, so every broadcast and slice keeps
    ``in`` as the contiguous, vectorised inner dimension (a trailing size-8 dimension was 2-3x
    slower); the recursion starts at order 1 (hat functions, in place) instead of a boolean
    order-0 indicator; the ``1/k`` factors are left out and applied once (``1/K!``) in the last step.

    Parameters
    ----------
    u : torch.Tensor, shape (batch, in_features)
        Inputs in grid units: ``(x - first_knot) / h``.
    spline_order : int
    n_cells : int
        Number of knot intervals, ``grid_size + 2 * spline_order``.
    with_derivative : bool

    Returns
    -------
    basis : torch.Tensor, shape (batch, n_cells - spline_order, in_features)
    dbasis_du : torch.Tensor of the same shape, or None
        For ``spline_order >= 2`` it is ``(spline_order - 1)!`` times the derivative (the factor is
        cheaper to apply to the summed ``(batch, in)`` gradient).
    """
    j = torch.arange(n_cells, device=u.device, dtype=u.dtype).unsqueeze(-1)  # (n_cells, 1)
    w = u.unsqueeze(1) - j  # (batch, n_cells, in): position of u relative to knot j
    if spline_order == 0:  # indicator of the cell [j, j + 1) that u falls in
        basis = ((w >= 0) & (w < 1)).to(u.dtype)
        return basis, (torch.zeros_like(basis) if with_derivative else None)
    # Order 1: hat function on [j, j + 2] peaking at j + 1, i.e. max(0, 1 - |w_j - 1|). It is 0 for
    # inputs off the grid (u < 0 or u > n_cells), and so is every higher order built from it.
    bases = torch.sub(1.0, (w[:, :-1] - 1).abs_()).clamp_min_(0)  # (batch, n_cells - 1, in)
    diff = None
    for k in range(2, spline_order + 1):
        diff = bases[:, :-1] - bases[:, 1:]  # (batch, n_cells - k, in), = (k-1)! (B[j] - B[j+1])
        if k < spline_order:  # unnormalised: holds k! * B[j,k]
            bases = torch.addcmul(bases[:, 1:] * (k + 1), w[:, :-k], diff)
        else:  # last order: divide by k! here rather than in an extra pass
            c = 1.0 / math.factorial(k)
            bases = torch.addcmul(bases[:, 1:] * ((k + 1) * c), w[:, :-k], diff, value=c)
    if not with_derivative:
        return bases, None
    if spline_order == 1:  # derivative of the hat: +1 on the rising half, -1 on the falling half
        dbasis = ((w[:, :-1] >= 0) & (w[:, :-1] < 1)).to(u.dtype) - ((w[:, :-1] >= 1) & (w[:, :-1] < 2)).to(u.dtype)
        return bases, dbasis
    return bases, diff  # d basis/du = diff / (K-1)!; the caller applies the factor after summing


class _UniformBSpline(torch.autograd.Function):
    """B-spline basis with a hand-written backward: one multiply-and-sum instead of autograd
    replaying every step of the recursion (most of the layer's cost on CPU)."""

    @staticmethod
    def forward(ctx, u, spline_order, n_cells):
        basis, dbasis = _uniform_b_spline(u, spline_order, n_cells, ctx.needs_input_grad[0])
        ctx.save_for_backward(dbasis)
        ctx.scale = 1.0 / math.factorial(spline_order - 1) if spline_order >= 2 else 1.0
        return basis

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_basis):
        (dbasis,) = ctx.saved_tensors
        return (grad_basis * dbasis).sum(1).mul_(ctx.scale), None, None  # (batch, in)


class _GaussianRBF(torch.autograd.Function):
    """``exp(-(u - j)^2)`` for centres j = 0..n_basis-1 (grid units), hand-written backward."""

    @staticmethod
    def forward(ctx, u, n_basis):
        j = torch.arange(n_basis, device=u.device, dtype=u.dtype).unsqueeze(-1)  # (n_basis, 1)
        t = u.unsqueeze(1) - j  # (batch, n_basis, in)
        basis = t.square().neg_().exp_()
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(t.mul_(basis))  # t * phi, since d phi/du = -2 t phi
        return basis

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_basis):
        (t_phi,) = ctx.saved_tensors
        return (grad_basis * t_phi).sum(1).mul_(-2.0), None  # (batch, in)


class KANLinear(nn.Module):
    """Kolmogorov-Arnold layer ``(..., in_features) -> (..., out_features)``.

    Parameters
    ----------
    in_features, out_features : int
    grid_size : int
        Number of grid cells over ``grid_range``.
    spline_order : int
        B-spline order (3 = cubic). With ``basis="rbf"`` it only sets the number of centres
        (``grid_size + spline_order``) so both bases have the same parameter count.
    grid_range : (float, float)
        Region where the B-splines form a partition of unity (see the module docstring).
    base_activation : type of nn.Module
        Class of the fixed nonlinearity of the base branch (instantiated with no arguments).
    basis : {"bspline", "rbf"}
    bias : bool
        Add a learnable bias, as ``nn.Linear`` does (efficient-kan has none).
    spline_init_scale : float
        Spline weights start as U(-s, s) with ``s = spline_init_scale / sqrt(in_features)``, so at
        initialisation the layer is close to ``Linear(base_activation(x))`` plus a small spline.

    Attributes
    ----------
    base_weight : (out_features, in_features)
    spline_weight : (out_features, n_basis, in_features)
        (efficient-kan stores ``(out, in, n_basis)``; basis-major matches the layout the basis is
        computed in, so the matrix product needs no transpose copy.)
    bias : (out_features,) or None
    grid : buffer, persistent; knots ``(in_features, grid_size + 2 * spline_order + 1)`` for
        B-splines, centres ``(in_features, n_basis)`` for RBF. Assumed uniform per feature.

    Notes
    -----
    Second derivatives through the basis are not supported (custom backward).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        grid_size: int = 5,
        spline_order: int = 3,
        grid_range: Tuple[float, float] = (-2.0, 2.0),
        base_activation: Type[nn.Module] = nn.SiLU,
        basis: str = "bspline",
        bias: bool = True,
        spline_init_scale: float = 0.1,
    ):
        super().__init__()
        if basis not in BASIS_TYPES:
            raise ValueError(f"basis must be one of {BASIS_TYPES}, got {basis!r}")
        if in_features < 1 or out_features < 1:
            raise ValueError(f"in_features and out_features must be >= 1, got {in_features}, {out_features}")
        if grid_size < 1 or spline_order < 0 or (basis == "rbf" and grid_size + spline_order < 2):
            raise ValueError(
                f"need grid_size >= 1 and spline_order >= 0 (rbf: grid_size + spline_order >= 2), "
                f"got grid_size={grid_size}, spline_order={spline_order}"
            )
        if not float(grid_range[0]) < float(grid_range[1]):
            raise ValueError(f"grid_range must be (low, high) with low < high, got {tuple(grid_range)}")
        self.in_features = in_features
        self.out_features = out_features
        self.grid_size = grid_size
        self.spline_order = spline_order
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.basis = basis
        self.spline_init_scale = spline_init_scale
        self.n_basis = grid_size + spline_order

        self.register_buffer(
            "grid", make_grid(in_features, grid_size, spline_order, self.grid_range, basis), persistent=True
        )
        self.base_activation = base_activation()
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, self.n_basis, in_features))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise the weights (the grid is left as it is).

        The base branch gets ``nn.Linear``'s default init, U(-1/sqrt(in), 1/sqrt(in)), so the layer
        starts as a ``Linear`` on ``base_activation(x)``; the spline weights start small (see
        ``spline_init_scale``) and grow where the data asks for curvature. Call this from a
        ``PreTrainedModel._init_weights`` so transformers' default N(0, 0.02) does not apply.
        """
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))  # = nn.Linear's default
        bound = self.spline_init_scale / math.sqrt(self.in_features)
        nn.init.uniform_(self.spline_weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(self.in_features), 1 / math.sqrt(self.in_features))

    def basis_functions(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate the basis for every input feature.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, in_features)

        Returns
        -------
        torch.Tensor, shape (batch, n_basis, in_features)
        """
        grid = self.grid.to(x.dtype)
        inv_h = 1.0 / (grid[:, 1] - grid[:, 0])  # (in,)
        u = torch.addcmul(-grid[:, 0] * inv_h, x, inv_h)  # (batch, in): x in grid units
        if self.basis == "bspline":
            return _UniformBSpline.apply(u, self.spline_order, grid.shape[1] - 1)
        return _GaussianRBF.apply(u, self.n_basis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the layer.

        Parameters
        ----------
        x : torch.Tensor, shape (..., in_features)

        Returns
        -------
        torch.Tensor, shape (..., out_features)
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected input with last dimension {self.in_features}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        out = F.linear(self.base_activation(x2), self.base_weight, self.bias)  # (N, out)
        basis = self.basis_functions(x2).reshape(x2.shape[0], -1)  # (N, n_basis * in)
        out = torch.addmm(out, basis, self.spline_weight.reshape(self.out_features, -1).t())  # (N, out)
        return out.reshape(*lead, self.out_features)

    def regularization_loss(self, regularize_activation: float = 1.0, regularize_entropy: float = 1.0) -> torch.Tensor:
        """efficient-kan's sparsity regulariser on the spline weights.

        The KAN paper penalises the L1 norm of each edge's activation over a batch, plus the
        entropy of those norms; like efficient-kan this uses the mean absolute spline weight of each
        edge as a cheap, data-free stand-in for the activation's L1 norm.

        Returns
        -------
        torch.Tensor, scalar: ``regularize_activation * sum(l1) + regularize_entropy * entropy(l1 / sum(l1))``
        where ``l1`` (out_features, in_features) is the per-edge mean |spline weight|. Finite even
        when every spline weight is 0 (then 0).
        """
        l1 = self.spline_weight.abs().mean(1)  # (out, in): one value per edge
        total = l1.sum()
        p = l1 / total.clamp_min(1e-12)
        entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
        return regularize_activation * total + regularize_entropy * entropy

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, basis={self.basis!r}, "
            f"grid_size={self.grid_size}, spline_order={self.spline_order}, grid_range={self.grid_range}, "
            f"bias={self.bias is not None}"
        )
