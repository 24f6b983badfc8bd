"""Skyformer's m x m part with its gradient written by hand (the CPU path of ``skyformer_fast``).

    W = k(L, L) + gamma I,  D = rowsum(W),  M = D^-1/2 W D^-1/2
    P = D^-1/2 Z D^-1/2 C,  Z = the Newton-Schulz steps from M / c, on M's eigenvalues

Forward is ``SkyformerAttention.small``'s computation: one eigendecomposition
(``pinv.spectral_times``). Backward goes back through the same steps by hand: Z by
Daleckii-Krein (``pinv.spectral_times_backward``), then the start's scale c (the largest column
and row sums of |M|, tied maxima sharing the gradient as autograd's ``amax`` does), M, D and the
Gaussian kernel. Autograd would build and walk a graph of about a hundred m x m operations per
group for the same numbers (float64 tests hold the two equal); this keeps Q, M's eigenvalues,
c, C and the landmarks and rebuilds W, D and M in backward.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from lra_bench.attention.kernels import gaussian_kernel
from lra_bench.attention.pinv import (
    newton_schulz_scale,
    spectral_times,
    spectral_times_backward,
)
from lra_bench.attention.skyformer_fast import GraphSmall


class Kernel(NamedTuple):
    """The landmark kernel and its normalisation: k(L, L), W, D^-1/2 (``[.., m, 1]``) and M."""

    gauss: torch.Tensor
    w: torch.Tensor
    d_inv_sqrt: torch.Tensor
    m_norm: torch.Tensor


class Saved(NamedTuple):
    """What backward needs: the inputs, M's eigenvalues and eigenvectors, and c."""

    landmarks: torch.Tensor
    c: torch.Tensor
    lam: torch.Tensor
    q: torch.Tensor
    start: torch.Tensor


def landmark_kernel(landmarks: torch.Tensor, gamma: float) -> Kernel:
    """``k(L, L)``, ``W = k + gamma I``, ``D^-1/2`` and ``M = D^-1/2 W D^-1/2`` (differentiable:
    the reference path and the GPU's run it under autograd)."""
    m = landmarks.shape[-2]
    gauss = gaussian_kernel(landmarks, landmarks)
    w = gauss + gamma * torch.eye(m, dtype=landmarks.dtype, device=landmarks.device)
    d_inv_sqrt = w.sum(dim=-1, keepdim=True).rsqrt()
    return Kernel(gauss, w, d_inv_sqrt, d_inv_sqrt * w * d_inv_sqrt.mT)


def small_forward(
    landmarks: torch.Tensor, c: torch.Tensor, *, gamma: float, iters: int, init: str
) -> tuple[torch.Tensor, Saved]:
    """P and what ``small_backward`` needs; raises ``torch.linalg.LinAlgError`` where the
    eigendecomposition fails."""
    kernel = landmark_kernel(landmarks, gamma)
    start = newton_schulz_scale(kernel.m_norm, init)
    y, (lam, q) = spectral_times(kernel.m_norm, start, kernel.d_inv_sqrt * c, iters)
    return kernel.d_inv_sqrt * y, Saved(landmarks, c, lam, q, start)


def small_backward(
    saved: Saved, grad: torch.Tensor, *, gamma: float, iters: int, init: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL and dC of ``small_forward`` for the incoming ``grad`` (dP)."""
    landmarks, c, lam, q, start = saved
    kernel = landmark_kernel(landmarks, gamma)
    d_inv_sqrt, x = kernel.d_inv_sqrt, kernel.d_inv_sqrt * c
    dm, d_start, dx, y = spectral_times_backward(lam, q, start, x, iters, d_inv_sqrt * grad)
    d_d_inv_sqrt = (grad * y + dx * c).sum(-1, keepdim=True)  # P = D^-1/2 y
    dm = dm + _start_backward(kernel.m_norm, d_start, init)
    d_d_inv_sqrt += ((dm + dm.mT) * kernel.w) @ d_inv_sqrt  # M = D^-1/2 W D^-1/2
    dw = dm * d_inv_sqrt * d_inv_sqrt.mT
    dw += -0.5 * d_inv_sqrt.pow(3) * d_d_inv_sqrt  # D = W 1, D^-1/2: every entry of its row
    spread = (dw + dw.mT) * kernel.gauss  # k(l_i, l_j) = exp(-|l_i - l_j|^2 / 2)
    dl = spread @ landmarks - spread.sum(-1, keepdim=True) * landmarks
    return dl, d_inv_sqrt * dx


def _start_backward(m_norm: torch.Tensor, d_start: torch.Tensor, init: str) -> torch.Tensor:
    """dM from dc, c = ||M||_1 ||M||_inf per matrix (``per_matrix``) or the largest ||M||_1 of
    the batch (``batch``); ``d_start`` per matrix, ``[...]``."""
    sign = m_norm.sgn()
    col_sums, row_sums = m_norm.abs().sum(-2), m_norm.abs().sum(-1)
    col, row = col_sums.amax(-1, keepdim=True), row_sums.amax(-1, keepdim=True)
    at_col = _share(col_sums == col, sign.dtype)
    if init == "batch":  # c = max over the batch of the per-matrix column maxima
        at_matrix = _share((col == col.amax()).flatten(), sign.dtype).view(col.shape)
        return (d_start.sum() * at_matrix * at_col).unsqueeze(-2) * sign
    d_start = d_start.unsqueeze(-1)
    by_col = (d_start * row * at_col).unsqueeze(-2)
    by_row = (d_start * col * _share(row_sums == row, sign.dtype)).unsqueeze(-1)
    return (by_col + by_row) * sign


def _share(at_max: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1 / (number of maxima) where ``at_max`` along the last axis, else 0 (``amax``'s gradient)."""
    share = at_max.to(dtype)
    return share / share.sum(-1, keepdim=True)


class SkyformerSmall:
    """``small_forward`` and ``small_backward`` as a ``skyformer_fast.SmallPart``; a group whose
    eigendecomposition fails runs ``fallback`` (autograd through the iterations) instead."""

    def __init__(self, *, gamma: float, iters: int, init: str, fallback: GraphSmall) -> None:
        self.settings = {"gamma": gamma, "iters": iters, "init": init}
        self.fallback = fallback

    def forward(self, group, landmarks, c, grad):
        try:
            p, saved = small_forward(landmarks, c, **self.settings)
        except torch.linalg.LinAlgError:
            return self.fallback.forward(group, landmarks, c, grad)
        return p, tuple(saved) if grad else ()

    def backward(self, group, kept, grad):
        if not kept:
            return self.fallback.backward(group, kept, grad)
        return small_backward(Saved(*kept), grad, **self.settings)
