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
        if not 1 <= self.block_size <= max_len:
            raise ValueError(
                f"block_size: must be between 1 and the task's max length {max_len}, got "
                f"{self.block_size}"
            )
