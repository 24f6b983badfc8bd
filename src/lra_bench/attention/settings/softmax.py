"""Softmax attention's settings (``attn=softmax``); the implementation is
``lra_bench.attention.softmax``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("softmax", "lra_bench.attention.softmax:SoftmaxAttention")
@dataclass
class SoftmaxConfig(AttentionConfig):
    name: str = "softmax"
    dropout: float = 0.1
    impl: str = "sdpa"  # sdpa (torch's fused kernels) | math (materialise softmax(QK^T/sqrt d))

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_choice("impl", ("sdpa", "math"))
