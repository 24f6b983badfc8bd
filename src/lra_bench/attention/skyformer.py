"""Skyformer (Chen et al., 2021, arXiv 2111.00035): Gaussian-kernel attention approximated by
Nystrom.

out = k(Q,L) D^-1/2 pinv(M) D^-1/2 (k(L,K) V), with W = k(L,L) + gamma I, D = rowsum(W),
M = D^-1/2 W D^-1/2, k(x, y) = exp(-||x - y||^2 / 2) on q, k scaled by d^-1/4, and pinv(M) by
Newton-Schulz iterations. No row normalisation. Cost O(n m d + m^3).

``impl=fast`` (default) is one autograd function (``skyformer_fast.py``): the two n x m kernel
blocks are built tile by tile and rebuilt in backward, whose gradients are written by hand; W, M
and the start's scale are rebuilt in backward. M is symmetric, so on a CPU the Newton-Schulz
steps run on its eigenvalues (``pinv.symmetric_newton_schulz_times``: the same steps from the
same start, far fewer products), keeping one m x m per head; on a GPU the iterations run and are
recomputed in backward. What a layer keeps for backward is O(m d + m^2) besides q, k and v.
``impl=reference`` is the same mathematics written plainly, the iterations included, and
differentiated by autograd (the float64 reference in tests).
"""

from __future__ import annotations

import torch

from lra_bench.attention.base import (
    SampledAttention,
    uniform_indices,
    upcast,
    valid_lengths,
)
from lra_bench.attention.chunked import recomputed
from lra_bench.attention.kernels import gaussian_kernel
from lra_bench.attention.pinv import (
    EIGEN_DEVICES,
    newton_schulz_reference,
    newton_schulz_scale,
    symmetric_newton_schulz_times,
)
from lra_bench.attention.settings.skyformer import SkyformerConfig
from lra_bench.attention.skyformer_fast import GraphSmall, skyformer_attention
from lra_bench.attention.skyformer_small import SkyformerSmall, landmark_kernel


class SkyformerAttention(SampledAttention):
    cfg: SkyformerConfig

    def draw_landmarks(self, lengths: torch.Tensor, n: int, heads: int) -> torch.Tensor:
        """Indices into the rows of [Q; K] (K row j is n + j), shape ``[batch, heads, m]``.

        Drawn uniformly with replacement from valid tokens only. Tests may replace this
        method to pin the landmarks.
        """
        m, g = self.cfg.num_landmarks, self.generator(lengths.device)
        if self.cfg.landmarks_from == "joint":
            idx = uniform_indices(2 * lengths, (heads, m), g)
            from_k = idx >= lengths.view(-1, 1, 1)
            return torch.where(from_k, idx - lengths.view(-1, 1, 1) + n, idx)
        m_q = (m + 1) // 2
        idx_q = uniform_indices(lengths, (heads, m_q), g)
        idx_k = uniform_indices(lengths, (heads, m - m_q), g) + n
        return torch.cat([idx_q, idx_k], dim=-1)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)  # the Gram matrix and pinv need fp32
        b, h, n, _ = q.shape
        idx = self.draw_landmarks(valid_lengths(mask, b, n, q.device), n, h)
        run = self.reference if self.cfg.impl == "reference" else self.fast
        return run(q, k, v, mask, idx).to(in_dtype)

    def landmark_kernel(
        self, landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """M = D^-1/2 W D^-1/2, D^-1/2 (``[b, h, m, 1]``) and the Newton-Schulz start's scale c."""
        kernel = landmark_kernel(landmarks, self.cfg.gamma)
        return (
            kernel.m_norm,
            kernel.d_inv_sqrt,
            newton_schulz_scale(kernel.m_norm, self.cfg.pinv_init),
        )

    def fast(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """Both blocks tile by tile in one autograd function (``skyformer_fast``), no n x m
        tensor alive or saved."""
        n = q.shape[2]
        from_k = idx >= n
        rows = torch.where(from_k, idx - n, idx)
        scale = q.shape[-1] ** -0.25
        by_entry = self.cfg.pinv_init == "per_matrix"  # "batch": one scale over every matrix
        small = GraphSmall(self.small)
        if q.device.type in EIGEN_DEVICES:  # the eigendecomposition's path: gradients by hand
            cfg = self.cfg
            small = SkyformerSmall(
                gamma=cfg.gamma, iters=cfg.pinv_iters, init=cfg.pinv_init, fallback=small
            )
        return skyformer_attention(
            q, k, v, mask, rows, from_k, scale=scale, small=small, by_entry=by_entry
        )

    def small(self, landmarks: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """P = D^-1/2 pinv(M) D^-1/2 C: the m x m part. M and its scale are rebuilt in backward;
        the pseudo-inverse keeps one m x m per layer."""
        m_norm, d_inv_sqrt, start_scale = recomputed(self.landmark_kernel, landmarks)
        return d_inv_sqrt * symmetric_newton_schulz_times(
            m_norm, start_scale, d_inv_sqrt * c, self.cfg.pinv_iters
        )

    def reference(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None,
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """The formula as written, every block materialised."""
        d = q.shape[-1]
        scale = d**-0.25
        q, k = q * scale, k * scale
        if mask is not None:
            v = v * mask[:, None, :, None].to(v.dtype)
        rows = torch.cat([q, k], dim=2)
        landmarks = torch.gather(rows, 2, idx.unsqueeze(-1).expand(-1, -1, -1, d))
        k_ql = gaussian_kernel(q, landmarks)  # [b, h, n, m]
        k_lk = gaussian_kernel(landmarks, k)  # [b, h, m, n]
        if mask is not None:
            k_lk = k_lk * mask[:, None, None, :].to(k_lk.dtype)
        m_norm, d_inv_sqrt, _ = self.landmark_kernel(landmarks)
        z = newton_schulz_reference(m_norm, self.cfg.pinv_iters, self.cfg.pinv_init)
        return k_ql @ (d_inv_sqrt * (z @ (d_inv_sqrt * (k_lk @ v))))
