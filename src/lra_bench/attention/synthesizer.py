"""Dense Synthesizer (Tay et al., 2021, arXiv 2005.00743): attention logits from a per-token MLP.

B_i = W2 relu(W1 x_i + b1) + b2 in R^{max_len}; out = softmax(B[:, :n] with padded keys
hidden) V. No query-key dot product: keys are unused (the model's key projection gets no
gradient). W1 (d -> d) and W2 (d -> max_len) are trained with the model, shared by the heads.
Cost O(n^2 d) time, O(n^2) memory: quadratic by design.

Deviation: the paper feeds the token representation X_i; the interface gives per-head
projections only, so x_i is the head's query vector q_i (the LRA code feeds the layer input
to per-head dense layers, a comparable learned projection).

Settings (defaults: the paper's dense synthesizer): ``mode: random`` uses a trained logit
matrix R[head] in R^{max_len x max_len} instead of the MLP (the paper's random synthesizer),
``mode: dense_random`` adds both; ``dot_product: true`` adds the usual q.k / sqrt d logits.
The LRA code ran ``mode: random`` with ``dot_product: true`` (its model defaults; the task
configs' synthesizer keys never reach the model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lra_bench.attention.base import Attention, hidden_score, upcast
from lra_bench.attention.blocks import MASKED
from lra_bench.attention.settings.synthesizer import SynthesizerConfig


class SynthesizerAttention(Attention):
    uses_keys = False
    cfg: SynthesizerConfig

    def __init__(
        self, cfg: SynthesizerConfig, *, head_dim: int, num_heads: int, max_len: int
    ) -> None:
        super().__init__(cfg, head_dim=head_dim, num_heads=num_heads, max_len=max_len)
        self.uses_keys = cfg.dot_product
        if "dense" in cfg.mode:
            self.hidden = nn.Linear(head_dim, head_dim)  # W1, b1
            self.to_logits = nn.Linear(head_dim, max_len)  # W2, b2: one logit per key position
        # R ~ U(-a, a), a = sqrt(3 / (heads max_len)): the LRA code's Xavier-uniform of [h, L, L]
        if "random" in cfg.mode:
            bound = (3.0 / (num_heads * max_len)) ** 0.5
            self.random_logits = nn.Parameter(
                torch.empty(num_heads, max_len, max_len).uniform_(-bound, bound)
            )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """B = W2 relu(W1 x + b1) + b2 restricted to the first n key positions, ``[b, h, n, n]``."""
        n, dt = x.shape[2], x.dtype
        hid = F.relu(F.linear(x, self.hidden.weight.to(dt), self.hidden.bias.to(dt)))
        return F.linear(hid, self.to_logits.weight[:n].to(dt), self.to_logits.bias[:n].to(dt))

    def scores(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """The chosen logits summed, ``[b, h, n, n]``."""
        n = q.shape[2]
        scores = (
            self.logits(q)
            if "dense" in self.cfg.mode
            else torch.zeros((), dtype=q.dtype, device=q.device)
        )
        if "random" in self.cfg.mode:
            scores = scores + self.random_logits[:, :n, :n].to(q.dtype)
        if self.cfg.dot_product:
            scores = scores + q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
        return scores.expand(q.shape[0], -1, n, n)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        q, k, v = upcast(q, k, v)
        if q.shape[2] > self.max_len:
            raise ValueError(
                f"synthesizer: sequence length {q.shape[2]} exceeds the max_len {self.max_len} it "
                "was built for"
            )
        scores = self.scores(q, k)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], hidden_score(scores.dtype, MASKED))
        weights = F.dropout(
            torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training
        )
        return (weights @ v).to(in_dtype)
