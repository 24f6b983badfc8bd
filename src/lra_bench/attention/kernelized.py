"""Kernelized attention (Chen et al., 2021, arXiv 2111.00035, Sec. 3): the exact Gaussian kernel.

C_ij = exp(-||q_i - k_j||^2 / (2 sqrt(d))) and out = C V, with no row normalisation: the
exact counterpart that Skyformer approximates. Quadratic in n (C is materialised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, upcast
from lra_bench.attention.kernels import gaussian_kernel
from lra_bench.attention.settings.kernelized import KernelizedConfig


class KernelizedAttention(Attention):
    cfg: KernelizedConfig

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)  # exp of a distance: fp32
        scale = q.shape[-1] ** -0.25  # ||q s - k s||^2 / 2 = ||q - k||^2 / (2 sqrt d)
        c = F.dropout(
            gaussian_kernel(q * scale, k * scale), p=self.cfg.dropout, training=self.training
        )
        if (
            mask is not None
        ):  # padded keys removed: their values are zeroed (cheaper than C's columns)
            v = v * mask[:, None, :, None].to(v.dtype)
        return (c @ v).to(in_dtype)
