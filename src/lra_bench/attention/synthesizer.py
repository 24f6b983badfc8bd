"""Dense Synthesizer (Tay et al., 2021, arXiv 2005.00743): attention logits from a per-token MLP.

B_i = W2 relu(W1 x_i + b1) + b2 in R^{max_len}; out = softmax(B[:, :n] with padded keys
hidden) V. No query-key dot product: keys are unused (the model's key projection gets no
gradient). W1 (d -> d) and W2 (d -> max_len) are trained with the model, shared by the heads.
Cost O(n^2 d) time, O(n^2) memory: quadratic by design.

Deviation: the paper feeds the token representation X_i; the interface gives per-head
projections only, so x_i is the head's query vector q_i (the LRA code feeds the layer input
to per-head dense layers, a comparable learned projection).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.attention.base import Attention, AttentionConfig, hidden_score
from lra_bench.attention.blocks import MASKED, upcast
from lra_bench.attention.registry import register_attention


@dataclass
class SynthesizerConfig(AttentionConfig):
    name: str = "synthesizer"
    dropout: float = 0.0


@register_attention("synthesizer", SynthesizerConfig)
class SynthesizerAttention(Attention):
    uses_keys = False
    cfg: SynthesizerConfig

    def __init__(self, cfg: SynthesizerConfig, *, head_dim: int, num_heads: int, max_len: int) -> None:
        super().__init__(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
        self.hidden = nn.Linear(head_dim, head_dim)  # W1, b1
        self.to_logits = nn.Linear(head_dim, max_len)  # W2, b2: one logit per key position

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """B = W2 relu(W1 x + b1) + b2 restricted to the first n key positions, ``[b, h, n, n]``."""
        n, dt = x.shape[2], x.dtype
        hid = F.relu(F.linear(x, self.hidden.weight.to(dt), self.hidden.bias.to(dt)))
        return F.linear(hid, self.to_logits.weight[:n].to(dt), self.to_logits.bias[:n].to(dt))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        in_dtype = q.dtype
        q, v = upcast(q, v)
        if q.shape[2] > self.max_len:
            raise ValueError(f"synthesizer: sequence length {q.shape[2]} exceeds the max_len {self.max_len} it was built for")
        scores = self.logits(q)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], hidden_score(scores.dtype, MASKED))
        weights = F.dropout(torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training)
        return (weights @ v).to(in_dtype)
