"""Kernel functions shared by the kernel-based variants."""

from __future__ import annotations

import torch


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """exp(-||x_i - y_j||^2 / 2) for ``x [..., n, d]`` and ``y [..., m, d]`` -> ``[..., n, m]``.

    Computed as exp(x.y - |x|^2/2 - |y|^2/2) with the exponent clamped at 0, which
    removes the rounding that could push a distance below zero.
    """
    x_sq = 0.5 * (x * x).sum(dim=-1, keepdim=True)
    y_sq = 0.5 * (y * y).sum(dim=-1).unsqueeze(-2)
    return torch.exp((x @ y.transpose(-1, -2) - x_sq - y_sq).clamp(max=0.0))
