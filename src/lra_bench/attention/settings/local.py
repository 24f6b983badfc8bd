"""Block-local attention's settings (``attn=local``); the implementation is
``lra_bench.attention.local``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("local", "lra_bench.attention.local:LocalAttention")
@dataclass
class LocalConfig(AttentionConfig):
    name: str = "local"
    dropout: float = 0.0
    block_size: int = 64  # tokens per block; a query sees the keys of its own block

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_up_to_max_len("block_size", max_len)
