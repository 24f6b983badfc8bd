"""Linear attention (Katharopoulos et al., 2020, "Transformers are RNNs", arXiv 2006.16236).

phi(x) = elu(x) + 1; out_i = phi(q_i)^T S / (phi(q_i)^T z + eps) with S = sum_j phi(k_j) v_j^T
and z = sum_j phi(k_j), both over real keys only (padded keys contribute nothing). As in the
paper, q and k are not scaled by 1/sqrt(d). ``eps`` (the paper code's 1e-6) keeps the
denominator away from 0. Cost O(n d^2); computed in fp32 for fp16/bf16 inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, upcast
from lra_bench.attention.settings.linear import LinearConfig


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 (positive, so the normaliser is positive)."""
    return F.elu(x) + 1.0


class LinearAttention(Attention):
    cfg: LinearConfig

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        phi_q, phi_k = elu_feature_map(q), elu_feature_map(k)
        v_ext = torch.cat([v, torch.ones_like(v[..., :1])], dim=-1)  # last column accumulates z
        if mask is not None:
            v_ext = v_ext * mask[:, None, :, None].to(v.dtype)  # padded keys: no term in S nor z
        out = phi_q @ (phi_k.transpose(-1, -2) @ v_ext)  # [b, h, n, d + 1]
        return (out[..., :-1] / (out[..., -1:] + self.cfg.eps)).to(in_dtype)
