"""Cosine-similarity attention: softmax over scaled cosine similarities of queries and keys.

scores = temperature * cos(q_i, k_j); padded keys are hidden; softmax and the normalisation
run in float32 for half-precision inputs. Registered with lra-bench through the entry point
``cosine = "cosine_attention:CosineAttention"`` (pyproject.toml); its settings are the
``Config`` dataclass below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lra_bench.attention import Attention, AttentionConfig


@dataclass
class CosineConfig(AttentionConfig):
    name: str = "cosine"  # must equal the entry point's name
    dropout: float = 0.0
    temperature: float = 10.0  # scale of the cosine similarities (1 / softmax temperature)

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        if not self.temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")


class CosineAttention(Attention):
    Config = CosineConfig
    cfg: CosineConfig

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        in_dtype = q.dtype
        if in_dtype in (torch.float16, torch.bfloat16):
            q, k, v = q.float(), k.float(), v.float()
        scores = (
            self.cfg.temperature * F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2)
        )
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        weights = F.dropout(
            torch.softmax(scores, dim=-1), p=self.cfg.dropout, training=self.training
        )
        return (weights @ v).to(in_dtype)
