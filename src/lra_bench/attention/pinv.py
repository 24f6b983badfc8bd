"""Iterative Moore-Penrose pseudo-inverse (Newton-Schulz), as used by Nystromformer and Skyformer.

    Z <- 1/4 Z (13I - MZ (15I - MZ (7I - MZ)))

from one of two starts:

- ``per_matrix`` (the Nystromformer paper): Z0 = M^T / (||M||_1 ||M||_inf), per matrix;
- ``batch`` (the code behind the Nystromformer and Skyformer papers' tables): Z0 = M^T / c with
  c the largest ||M||_1 (max column sum) over the whole batch, one number for every matrix.
  It converges when the spectral norm of M is below about sqrt(2 c), as for the row-normalised
  kernel matrices those models invert (norm <= 1), not for any matrix.

``newton_schulz_pinv`` runs the iterations batched, as a custom autograd function that keeps
only each iterate Z and its product MZ for backward (two ``m x m`` per step instead of six);
``newton_schulz_reference`` is the plain loop, differentiated by autograd.

``symmetric_newton_schulz_times`` gives Z x for the same iterations and a symmetric M
(Skyformer's normalised kernel matrix) at a fraction of the cost. From the start Z0 = M / c every
iterate is a polynomial in M, so with M = Q diag(l) Q^T, Z = Q diag(f(l)) Q^T, where f runs the
same steps on each eigenvalue: z0 = l / c, z <- z p(l z) / 4, p(y) = 13 - 15y + 7y^2 - y^3.
Backward uses the Daleckii-Krein formula dZ = Q (F o (Q^T dM Q)) Q^T, with F[i, j] the divided
difference (f(l_i) - f(l_j)) / (l_i - l_j), carried through the same steps by the product rule so
that it never divides by a small difference (F[i, i] = f'(l_i)). The gradient is the one for
symmetric perturbations, the only ones a symmetric M can receive. It equals the iterations to
about 1e-14 in float64; in float32 both are within about 2e-6 of the float64 result. One
eigendecomposition and four products replace the 24 products of six steps forward and about 60
backward, and backward keeps Q and x instead of two k x k per step. It runs on a CPU; on a GPU,
where batched eigendecompositions of this size are slow and the products are not, the iterations
run (recomputed in backward).
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import torch

from lra_bench.attention.base import backward_without_autocast, without_autocast
from lra_bench.attention.chunked import recomputed
from lra_bench.attention.settings.base import PINV_INITS

EIGEN_DEVICES = ("cpu",)  # where symmetric Newton-Schulz runs on eigenvalues (see the module)


def newton_schulz_scale(m: torch.Tensor, init: str = "per_matrix") -> torch.Tensor:
    """c with Z0 = M^T / c: ``[..., 1, 1]`` (``per_matrix``) or one number (``batch``),
    differentiable."""
    if init not in PINV_INITS:
        raise ValueError(f"pinv_init: choose {' or '.join(PINV_INITS)}, got {init!r}")
    abs_m = m.abs()
    col = abs_m.sum(dim=-2).amax(dim=-1)  # ||M||_1 : max column sum
    if init == "batch":
        return col.amax()
    row = abs_m.sum(dim=-1).amax(dim=-1)  # ||M||_inf : max row sum
    return (col * row)[..., None, None]


def newton_schulz_start(m: torch.Tensor, init: str = "per_matrix") -> torch.Tensor:
    """Z0 for ``m [..., k, k]`` (differentiable, like the norms it divides by)."""
    return m.mT / newton_schulz_scale(m, init)


def newton_schulz_reference(
    m: torch.Tensor, iters: int = 6, init: str = "per_matrix"
) -> torch.Tensor:
    """The iterations as written, differentiated by autograd (the reference for the fast path)."""
    z = newton_schulz_start(m, init)
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    for _ in range(iters):
        mz = m @ z
        z = 0.25 * z @ (13 * eye - mz @ (15 * eye - mz @ (7 * eye - mz)))
    return z


class _NewtonSchulz(torch.autograd.Function):
    """``iters`` steps from ``z0``; backward re-derives each step's inner factors from Z and MZ.

    Each step is written as ``z <- z T``, ``T = 13/4 I - (MZ/4) (15 I - MZ (7 I - MZ))``, its
    products fused with their sums (``baddbmm``): five operations a step forward and eleven
    backward, where a GPU pays per operation launched at these sizes (m x m, m about 128)."""

    @staticmethod
    def forward(ctx: Any, m: torch.Tensor, z: torch.Tensor, iters: int) -> torch.Tensor:
        shape, k = z.shape, m.shape[-1]
        m, z = m.reshape(-1, k, k), z.reshape(-1, k, k)
        eyes = _step_eyes(m)
        kept: list[torch.Tensor] = []
        for _ in range(iters):
            mz = torch.bmm(m, z)
            kept += [z, mz]
            z = torch.bmm(z, _step_factor(mz, eyes)[2])
        if any(ctx.needs_input_grad[:2]):
            ctx.save_for_backward(m, *kept)
        return z.view(shape)

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        m, *kept = ctx.saved_tensors
        shape, k = grad.shape, m.shape[-1]
        grad = grad.reshape(-1, k, k)
        eyes = _step_eyes(m)
        dm = torch.zeros_like(m)
        for step in range(len(kept) // 2 - 1, -1, -1):
            z, y = kept[2 * step], kept[2 * step + 1]
            t1, t3, t = _step_factor(y, eyes)  # z_next = z t, t = 13/4 I - y t3 / 4
            dt = torch.bmm(z.mT, grad)
            dz = torch.bmm(grad, t.mT)
            a = torch.bmm(y.mT, dt)  # 4 dt3 = -y^T dt; t3 = 15 I - y t1, t1 = 7 I - y
            four_dy = torch.bmm(a, t1.mT).baddbmm_(dt, t3.mT, alpha=-1).baddbmm_(y.mT, a, alpha=-1)
            dm.baddbmm_(four_dy, z.mT, alpha=0.25)  # y = m z
            grad = dz.baddbmm_(m.mT, four_dy, alpha=0.25)
        return dm.view(shape), grad.view(shape), None


def _step_eyes(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """7I, 15I and 13/4 I of ``m``'s size, made once per call (each is a launch on a GPU)."""
    eye = torch.eye(m.shape[-1], dtype=m.dtype, device=m.device)
    return 7 * eye, 15 * eye, 3.25 * eye


def _step_factor(y: torch.Tensor, eyes: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """``t1 = 7I - y``, ``t3 = 15I - y t1`` and ``t = (13I - y t3) / 4`` for ``y = MZ [B, k, k]``:
    one step is ``z <- z t``."""
    seven, fifteen, thirteen_quarters = eyes
    t1 = torch.sub(seven, y)
    t3 = torch.baddbmm(fifteen, y, t1, alpha=-1)
    return t1, t3, torch.baddbmm(thirteen_quarters, y, t3, alpha=-0.25)


def newton_schulz_pinv(m: torch.Tensor, iters: int = 6, init: str = "per_matrix") -> torch.Tensor:
    """Approximate pinv of each ``[..., k, k]`` matrix with ``iters`` Newton-Schulz steps (see the
    module)."""
    with without_autocast(m):  # backward runs outside autocast: forward must match its dtypes
        return _NewtonSchulz.apply(m, newton_schulz_start(m, init), iters)


def _step_poly(y: torch.Tensor) -> torch.Tensor:
    """p(y) = 13 - 15y + 7y^2 - y^3, one step being z <- z p(m z) / 4."""
    return 13 - y * (15 - y * (7 - y))


def _step_poly_slope(y: torch.Tensor) -> torch.Tensor:
    """p'(y)."""
    return -15 + y * (14 - 3 * y)


def _eigen_steps(lam: torch.Tensor, c: torch.Tensor, iters: int) -> torch.Tensor:
    """f(l): the Newton-Schulz steps on each eigenvalue ``lam [..., k]``."""
    z = lam / c.squeeze(-1)
    for _ in range(iters):
        z = 0.25 * z * _step_poly(lam * z)
    return z


def _outer_sum(left: list[torch.Tensor], right: list[torch.Tensor]) -> torch.Tensor:
    """``sum_i left_i right_i^T`` for vectors ``[..., k]``: one batched product of rank
    ``len(left)``, ``[..., k, k]``."""
    return torch.stack(left, dim=-1) @ torch.stack(right, dim=-2)


def _add_outer_sum(acc: torch.Tensor, left: list[torch.Tensor], right: list[torch.Tensor]) -> None:
    """``acc += _outer_sum(left, right)`` in place, in the product itself (``baddbmm_``)."""
    flat = acc.view(-1, *acc.shape[-2:])
    flat.baddbmm_(torch.stack(left, -1).flatten(0, -3), torch.stack(right, -2).flatten(0, -3))


def _eigen_step_derivatives(
    lam: torch.Tensor, c: torch.Tensor, iters: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """f(l), F (the divided differences of f, ``[..., k, k]``) and df/dc, through the same steps.

    With y = l z, p = p(y) and P(a, b) = [p](y(a), y(b)) = u(a) + u(b) - y(a) y(b),
    u = -7.5 + 7y - y^2 (the divided difference of the cubic p), one step z' = z p / 4 gives, by
    the product rule,
    [z'](a, b) = P(a, b) (a z(a) [z](a, b) + z(a) z(b)) / 4 + [z](a, b) p(b) / 4
               = [z](a, b) R(a, b) + S(a, b),
    R = (a z(a) / 4) P(a, b) + p(b) / 4 and S = (z(a) / 4) z(b) P(a, b): sums of four and three
    outer products, so a step costs two thin batched products and two passes over the k x k
    matrix.
    """
    c_vec = c.squeeze(-1)
    z = lam / c_vec
    dz_dc = -z / c_vec
    divided = (1 / c_vec).unsqueeze(-1).expand(*lam.shape, lam.shape[-1]).clone()  # [z0] = 1 / c
    ones = torch.ones_like(lam)
    for _ in range(iters):
        y = lam * z
        p = _step_poly(y)
        u = y * (7 - y) - 7.5
        alpha, beta = 0.25 * lam * z, 0.25 * z
        divided.mul_(_outer_sum([alpha * u, alpha, -alpha * y, ones], [ones, u, y, 0.25 * p]))
        _add_outer_sum(divided, [beta * u, beta, -beta * y], [z, z * u, z * y])
        dz_dc = 0.25 * dz_dc * (p + y * _step_poly_slope(y))
        z = beta * p
    return z, divided, dz_dc


def spectral_times(
    m: torch.Tensor, c: torch.Tensor, x: torch.Tensor, iters: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Z x (see ``symmetric_newton_schulz_times``) and M's eigenvalues and eigenvectors, which
    ``spectral_times_backward`` takes; raises ``torch.linalg.LinAlgError`` where the
    eigendecomposition fails."""
    lam, q = torch.linalg.eigh(m)
    return q @ (_eigen_steps(lam, c, iters).unsqueeze(-1) * (q.mT @ x)), (lam, q)


class SpectralGrads(NamedTuple):
    """``spectral_times_backward``'s results: dM (for symmetric perturbations), dc (shaped like
    ``c``'s batch, ``[...]``), dx, and Z x (the forward's output, from the same products)."""

    dm: torch.Tensor
    dc: torch.Tensor
    dx: torch.Tensor
    times_x: torch.Tensor


def spectral_times_backward(
    lam: torch.Tensor, q: torch.Tensor, c: torch.Tensor, x: torch.Tensor, iters: int, grad
) -> SpectralGrads:
    """The gradients of ``spectral_times`` for the incoming ``grad`` (see ``SpectralGrads``)."""
    f, divided, dz_dc = _eigen_step_derivatives(lam, c, iters)
    q_grad, q_x = q.mT @ grad, q.mT @ x
    dx = q @ (f.unsqueeze(-1) * q_grad)  # Z^T grad, Z symmetric
    g = q_grad @ q_x.mT  # Q^T dZ Q for dZ = grad x^T
    g = 0.5 * (g + g.mT)  # only symmetric perturbations of M exist
    dm = q @ (divided * g) @ q.mT
    dc = (g.diagonal(dim1=-2, dim2=-1) * dz_dc).sum(-1)
    return SpectralGrads(dm, dc, dx, q @ (f.unsqueeze(-1) * q_x))


class _SpectralNewtonSchulzTimes(torch.autograd.Function):
    """Z x, Z the Newton-Schulz steps from Z0 = M / c for a symmetric M, on its eigenvalues (see
    the module).

    Keeps the eigenvectors, eigenvalues, c and x for backward: one ``k x k`` and one ``k x e`` per
    matrix.
    """

    @staticmethod
    def forward(
        ctx: Any, m: torch.Tensor, c: torch.Tensor, x: torch.Tensor, iters: int
    ) -> torch.Tensor:
        out, (lam, q) = spectral_times(m, c, x, iters)
        ctx.save_for_backward(lam, q, c, x)
        ctx.iters = iters
        return out

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        lam, q, c, x = ctx.saved_tensors
        dm, dc, dx, _ = spectral_times_backward(lam, q, c, x, ctx.iters, grad)
        return dm, dc.reshape(c.shape) if c.dim() else dc.sum(), dx, None


def _iterated_times(m: torch.Tensor, c: torch.Tensor, x: torch.Tensor, iters: int) -> torch.Tensor:
    return _NewtonSchulz.apply(m, m.mT / c, iters) @ x


def symmetric_newton_schulz_times(
    m: torch.Tensor, c: torch.Tensor, x: torch.Tensor, iters: int = 6
) -> torch.Tensor:
    """Z x for symmetric ``m [..., k, k]``, Z the Newton-Schulz steps from Z0 = M / c (``c`` from
    ``newton_schulz_scale``), ``x [..., k, e]``: on M's eigenvalues on a CPU (see the module).

    On a GPU, and where the eigendecomposition fails, the iterations run instead (recomputed in
    backward, so that they keep no ``k x k`` per step).
    """
    with without_autocast(m):
        if m.device.type in EIGEN_DEVICES:
            try:
                return _SpectralNewtonSchulzTimes.apply(m, c, x, iters)
            except torch.linalg.LinAlgError:
                pass
        return recomputed(partial(_iterated_times, iters=iters), m, c, x)
