"""Linformer (Wang et al., 2020, arXiv 2006.04768): softmax attention over k projected keys.

out = softmax(Q (E K)^T / sqrt d) (F V) with learned E, F in R^{k x n_max}, shared by the
heads of a layer (the paper's headwise sharing) and trained with the model. A sequence of
n <= n_max tokens uses the first n columns; padded keys and values are zeroed before the
projection, so padding never reaches a projected key. Cost O(n k d).

Settings that reproduce the Skyformer code (defaults follow the paper): ``share_kv`` uses E
for both keys and values (F = E); ``per_head`` gives every head its own E; ``trainable:
false`` keeps E a fixed random projection (a buffer, saved with the model). The Skyformer
code has all three: one E per head for K and V, and, since it moves the parameter with
``.to(device)`` inside the module, its GPU runs trained a copy the optimiser never saw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.attention.base import Attention, upcast
from lra_bench.attention.settings.linformer import LinformerConfig


class LinformerAttention(Attention):
    cfg: LinformerConfig

    def __init__(
        self, cfg: LinformerConfig, *, head_dim: int, num_heads: int, max_len: int
    ) -> None:
        super().__init__(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
        shape = (num_heads, cfg.proj_dim, max_len) if cfg.per_head else (cfg.proj_dim, max_len)
        self.add_projection("proj_k", torch.randn(shape) * cfg.init_std)  # E
        if not cfg.share_kv:
            self.add_projection("proj_v", torch.randn(shape) * cfg.init_std)  # F

    def add_projection(self, name: str, value: torch.Tensor) -> None:
        """Register E or F as a parameter (trained) or a buffer (fixed), per ``trainable``."""
        if self.cfg.trainable:
            self.register_parameter(name, nn.Parameter(value))
        else:
            self.register_buffer(name, value)

    def projections(self, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """E and F restricted to the first n columns: ``[k, n]``, or ``[1, heads, k, n]`` per
        head."""
        e = self.proj_k[..., :n].to(dtype)
        f = e if self.cfg.share_kv else self.proj_v[..., :n].to(dtype)
        if self.cfg.per_head:
            e, f = e.unsqueeze(0), f.unsqueeze(0)
        return e, f

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        n = q.shape[2]
        if n > self.max_len:
            raise ValueError(
                f"linformer: sequence length {n} exceeds the max_len {self.max_len} it was "
                "built for"
            )
        if mask is not None:
            keep = mask[:, None, :, None].to(k.dtype)
            k, v = k * keep, v * keep
        e, f = self.projections(n, k.dtype)
        k_proj, v_proj = e @ k, f @ v  # [b, h, k, d]
        weights = torch.softmax(q @ k_proj.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        weights = F.dropout(weights, p=self.cfg.dropout, training=self.training)
        return (weights @ v_proj).to(in_dtype)
