"""Linear attention's settings (``attn=linear``); the implementation is
``lra_bench.attention.linear``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("linear", "lra_bench.attention.linear:LinearAttention")
@dataclass
class LinearConfig(AttentionConfig):
    name: str = "linear"
    dropout: float = 0.0
    eps: float = 1e-6  # added to the normaliser phi(q)^T z

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_no_dropout("linear attention has")
        if self.eps < 0:
            raise ValueError(f"eps: must be >= 0, got {self.eps}")
