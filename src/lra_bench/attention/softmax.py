"""Exact softmax attention: torch SDPA by default, or the materialised n x n form the papers timed.

With attention dropout in training on a CPU, where SDPA would fall back to its math kernel and
materialise every head's n x n weights, ``impl=sdpa`` runs the same computation a block of query
rows at a time (``softmax_dropout.py``: same outputs and gradients for the same mask, bounded
memory). That path runs under the profiler label ``CHUNKED_EVENT``, which the bench reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lra_bench.attention.base import Attention, key_padding_bias
from lra_bench.attention.settings.softmax import SoftmaxConfig
from lra_bench.attention.softmax_dropout import dropped_softmax_attention

CHUNKED_EVENT = "lra_bench::softmax_dropout_blocks"


def softmax_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(QK^T/sqrt(d) + key mask) V, materialised (also the float64 reference in tests)."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    bias = key_padding_bias(mask, scores.dtype)
    if bias is not None:
        scores = scores + bias
    return torch.softmax(scores, dim=-1) @ v


class SoftmaxAttention(Attention):
    cfg: SoftmaxConfig

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        p = self.cfg.dropout if self.training else 0.0
        if self.cfg.impl == "sdpa" and p > 0 and q.device.type == "cpu":
            with torch.profiler.record_function(CHUNKED_EVENT):
                return dropped_softmax_attention(q, k, v, key_padding_bias(mask, q.dtype), p)
        if self.cfg.impl == "sdpa":
            attn_mask = None if mask is None else mask[:, None, None, :]
            return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        bias = key_padding_bias(mask, scores.dtype)
        if bias is not None:
            scores = scores + bias
        weights = F.dropout(torch.softmax(scores, dim=-1), p=p, training=self.training)
        return weights @ v
