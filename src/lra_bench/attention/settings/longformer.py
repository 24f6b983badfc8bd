"""Longformer's settings (``attn=longformer``); the implementation is
``lra_bench.attention.longformer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("longformer", "lra_bench.attention.longformer:LongformerAttention")
@dataclass
class LongformerConfig(AttentionConfig):
    name: str = "longformer"
    dropout: float = 0.0
    window: int = 256  # keys seen on each side of a query (the band is 2 window + 1 wide)
    global_first: bool = (
        True  # the first token is global (the paper's classification token); false as the LRA code
    )

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_up_to_max_len("window", max_len, low=0)
