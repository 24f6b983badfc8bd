"""Linformer's settings (``attn=linformer``); the implementation is
``lra_bench.attention.linformer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("linformer", "lra_bench.attention.linformer:LinformerAttention")
@dataclass
class LinformerConfig(AttentionConfig):
    name: str = "linformer"
    dropout: float = 0.0
    proj_dim: int = 128  # k, the number of projected keys/values
    init_std: float = 0.02  # E, F ~ N(0, init_std^2), as the LRA peer code
    share_kv: bool = (
        False  # true: one projection E for keys and values (F = E), as the Skyformer code
    )
    # true: a projection per head ([heads, k, max_len]) instead of one shared by the heads
    per_head: bool = False
    # false: E (and F) stay the fixed random draw (a buffer), as the Skyformer code's GPU runs
    trainable: bool = True

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_up_to_max_len("proj_dim", max_len)
        if self.init_std <= 0:
            raise ValueError(f"init_std: must be > 0, got {self.init_std}")
