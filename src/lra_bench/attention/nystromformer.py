"""Nystromformer (Xiong et al., 2021, arXiv 2102.03902): softmax attention through Nystrom
landmarks.

out = softmax(Q K~^T / sqrt d) pinv(softmax(Q~ K~^T / sqrt d)) softmax(Q~ K^T / sqrt d) V, with
landmarks Q~, K~ the means of m contiguous segments of Q and K, pinv by Newton-Schulz
iterations, plus an optional depthwise convolution on V (the paper's skip connection).

Segments split the *valid* tokens of each sequence (token i of L goes to segment
floor(i m / L)), so padding never moves a landmark. When L < m some segments are empty:
their landmarks are masked out, which leaves exactly the Nystrom form on the L non-empty
ones (pinv of a block-diagonal matrix with a zero block). Cost O(n m d + m^3).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.attention.base import (
    Attention,
    backward_without_autocast,
    hidden_score,
    matmul_dtype,
    upcast,
    valid_lengths,
    without_autocast,
)
from lra_bench.attention.chunked import recomputed
from lra_bench.attention.pinv import newton_schulz_pinv, newton_schulz_reference
from lra_bench.attention.settings.nystromformer import NystromformerConfig

KEPT_PINV_ELEMENTS = 1 << 20  # b h m^2 up to which the pinv iterations are kept (48 MB at 6)
MASKED = -1e9  # score offset of a hidden key: exp underflows to exactly 0 next to any visible key


def segment_means(
    x: torch.Tensor, lengths: torch.Tensor, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of ``x [b, h, n, d]`` over m contiguous segments of the valid tokens.

    Returns ``[b, h, m, d]`` and ``[b, m]`` bool (segment non-empty). Valid token i of a
    sequence of length L belongs to segment floor(i m / L); padded tokens to none. The rows are
    summed in place of ``x``'s memory layout (no copy of ``x`` made or kept for backward).
    """
    b, h, n, d = x.shape
    pos = torch.arange(n, device=x.device)
    lens = lengths.clamp(min=1).view(-1, 1)
    seg = torch.where(pos < lens, pos * m // lens, m)  # [b, n]; m = the discard segment
    by_batch = seg + torch.arange(b, device=x.device).view(-1, 1) * (m + 1)
    flat = by_batch.reshape(
        -1
    )  # counted by a scatter, not bincount: no host sync for the output size
    counts = torch.zeros(b * (m + 1), dtype=torch.long, device=x.device).index_add_(
        0, flat, torch.ones_like(flat)
    )
    counts = counts.view(b, m + 1)[:, :m]
    # tokens as rows of [b n, h, d], a view when each token's heads sit together (one projection)
    try:
        rows = x.transpose(1, 2).view(b * n, h, d)
        sums = rows.new_zeros(b * (m + 1), h, d).index_add_(0, by_batch.reshape(-1), rows)
        sums = sums.view(b, m + 1, h, d)[:, :m].transpose(1, 2)
    except RuntimeError:  # [b, h, n, d] in memory (or a copy when neither)
        flat = (
            seg.unsqueeze(1) + (m + 1) * torch.arange(b * h, device=x.device).view(b, h, 1)
        ).reshape(-1)
        sums = x.new_zeros(b * h * (m + 1), d).index_add_(0, flat, x.reshape(b * h * n, d))
        sums = sums.view(b, h, m + 1, d)[:, :, :m]
    means = sums / counts.clamp(min=1).to(x.dtype)[:, None, :, None]
    return means, counts > 0


def _channels(x: torch.Tensor) -> torch.Tensor:
    """``[b, h, n, d] -> [b, h d, n]``: one channel per (head, feature), as conv1d wants them."""
    b, h, n, d = x.shape
    return x.transpose(2, 3).reshape(b, h * d, n)


class _SequenceConv(torch.autograd.Function):
    """conv1d of ``v [b, h, n, d]`` along the sequence, one filter per channel
    (``weight [h d, 1, k]``).

    Keeps ``v`` itself for backward, not the ``[b, h d, n]`` copy conv1d would keep (one more
    ``n x d`` per layer), and rebuilds that copy for the weight's gradient.
    """

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, weight: torch.Tensor, padding: int) -> torch.Tensor:
        b, h, n, d = v.shape
        ctx.save_for_backward(v, weight)
        ctx.padding = padding
        return (
            F.conv1d(_channels(v), weight, padding=padding, groups=h * d)
            .view(b, h, d, n)
            .transpose(2, 3)
        )

    @staticmethod
    @backward_without_autocast
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        v, weight = ctx.saved_tensors
        b, h, n, d = v.shape
        grad_channels = _channels(grad)
        dv = dw = None
        if ctx.needs_input_grad[0]:
            dv = torch.nn.grad.conv1d_input(
                (b, h * d, n), weight, grad_channels, padding=ctx.padding, groups=h * d
            )
            dv = dv.view(b, h, d, n).transpose(2, 3)
        if ctx.needs_input_grad[1]:
            dw = torch.nn.grad.conv1d_weight(
                _channels(v), weight.shape, grad_channels, padding=ctx.padding, groups=h * d
            )
        return dv, dw, None


class NystromformerAttention(Attention):
    cfg: NystromformerConfig

    def __init__(
        self, cfg: NystromformerConfig, *, head_dim: int, num_heads: int, max_len: int
    ) -> None:
        super().__init__(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
        self.conv: nn.Conv2d | None = None
        if cfg.conv_kernel > 0:
            self.conv = nn.Conv2d(
                num_heads,
                num_heads,
                (cfg.conv_kernel, 1),
                padding=(cfg.conv_kernel // 2, 0),
                bias=False,
                groups=num_heads,
            )

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)  # softmax products and pinv need fp32
        if mask is not None:  # also what the conv sees: no padding
            v = v * mask[:, None, :, None].to(v.dtype)
        out = (
            self.reference(q, k, v, mask)
            if self.cfg.impl == "reference"
            else self.fast(q, k, v, mask)
        )
        if (
            self.conv is not None
        ):  # v is already zero on padded tokens, like the conv's own zero padding
            out = out + self.depthwise_conv(v)
        return out.to(in_dtype)

    def depthwise_conv(self, v: torch.Tensor) -> torch.Tensor:
        """The per-head (kernel, 1) convolution along the sequence, as a 1-d convolution per
        (head, channel).

        Equal to ``conv2d`` with the module's weight; the 2-d CPU kernel unfolds the input 35-fold
        (six times slower and five times the memory at n = 4096).
        """
        assert self.conv is not None
        h, d, size = v.shape[1], v.shape[3], self.cfg.conv_kernel
        weight = (
            self.conv.weight.to(v.dtype).reshape(h, 1, size).repeat_interleave(d, dim=0)
        )  # [h d, 1, size]
        with without_autocast(v):  # backward runs outside autocast: forward must match its dtypes
            return _SequenceConv.apply(v, weight, size // 2)

    def landmarks(
        self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Segment means of q and k, and the additive bias of the landmark keys (0, or MASKED
        when empty)."""
        b, _, n, _ = q.shape
        lengths = valid_lengths(mask, b, n, q.device)
        if self.cfg.landmark_span == "padded" and mask is not None:
            keep = mask[:, None, :, None].to(q.dtype)  # zeroed padded rows, averaged in
            q, k, lengths = q * keep, k * keep, torch.full_like(lengths, n)
        q_l, lm_valid = segment_means(q, lengths, self.cfg.num_landmarks)
        k_l, _ = segment_means(k, lengths, self.cfg.num_landmarks)
        lm_bias = torch.zeros(lm_valid.shape, dtype=q.dtype, device=q.device).masked_fill(
            ~lm_valid, hidden_score(matmul_dtype(q), MASKED)
        )
        return q_l, k_l, lm_bias

    def fast(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """kernel_1 (z (kernel_3 v)) with both n x m factors as fused attention calls."""
        scale = q.shape[-1] ** -0.5
        q_l, k_l, lm_bias = self.landmarks(q, k, mask)
        lm_valid = (lm_bias == 0).to(q.dtype)
        kernel_2 = (
            torch.softmax(q_l @ k_l.mT * scale + lm_bias[:, None, None, :], dim=-1)
            * lm_valid[:, None, :, None]
        )
        # the iterations keep two m x m per step: rebuilt in backward when that is large, kept
        # when small (rebuilding them would cost more than the n x m factors at short lengths)
        pinv = partial(newton_schulz_pinv, iters=self.cfg.pinv_iters, init=self.cfg.pinv_init)
        z = pinv(kernel_2) if kernel_2.numel() <= KEPT_PINV_ELEMENTS else recomputed(pinv, kernel_2)
        key_bias = None
        if mask is not None:
            key_bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~mask, hidden_score(matmul_dtype(q), MASKED)
            )[:, None, None, :]
        kernel_3_v = F.scaled_dot_product_attention(
            q_l, k, v, attn_mask=key_bias, scale=scale
        )  # [b, h, m, d]
        return F.scaled_dot_product_attention(
            q, k_l, z @ kernel_3_v, attn_mask=lm_bias[:, None, None, :], scale=scale
        )

    def reference(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The three softmax factors materialised."""
        b, h, n, d = q.shape
        q, k = q * d**-0.25, k * d**-0.25  # so that q.k is already divided by sqrt d
        q_l, k_l, lm_bias = self.landmarks(q, k, mask)
        lm_valid = lm_bias == 0
        # masks ride in the matmuls: queries get a column of ones, keys a column of 0 / MASKED
        k_l = torch.cat([k_l, lm_bias[:, None, :, None].expand(-1, h, -1, -1)], dim=-1)
        q_l = torch.cat([q_l, torch.ones_like(q_l[..., :1])], dim=-1)
        key_bias = torch.zeros(b, n, dtype=q.dtype, device=q.device)
        if mask is not None:
            key_bias = key_bias.masked_fill(~mask, hidden_score(matmul_dtype(q), MASKED))
        k = torch.cat([k, key_bias[:, None, :, None].expand(-1, h, -1, -1)], dim=-1)
        q = torch.cat([q, torch.ones_like(q[..., :1])], dim=-1)
        kernel_1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)  # [b, h, n, m]
        kernel_2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)  # [b, h, m, m]
        kernel_2 = kernel_2 * lm_valid[:, None, :, None].to(
            q.dtype
        )  # empty landmarks: zero rows too
        kernel_3 = torch.softmax(q_l @ k.transpose(-1, -2), dim=-1)  # [b, h, m, n]
        z = newton_schulz_reference(kernel_2, self.cfg.pinv_iters, self.cfg.pinv_init)
        return kernel_1 @ (z @ (kernel_3 @ v))
