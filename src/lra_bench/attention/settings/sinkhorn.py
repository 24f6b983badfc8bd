"""Sinkhorn attention's settings (``attn=sinkhorn``); the implementation is
``lra_bench.attention.sinkhorn``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("sinkhorn", "lra_bench.attention.sinkhorn:SinkhornAttention")
@dataclass
class SinkhornConfig(AttentionConfig):
    name: str = "sinkhorn"
    dropout: float = 0.0
    block_size: int = 64  # tokens per block
    sinkhorn_iters: int = 5  # row + column normalisation rounds
    temperature: float = 0.75  # the logits are divided by it before Sinkhorn
    pool: str = (
        "sum"  # block embedding: sum (the paper, the LRA code) | mean of the block's real keys
    )

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_up_to_max_len("block_size", max_len)
        if self.sinkhorn_iters < 1:
            raise ValueError(f"sinkhorn_iters: must be >= 1, got {self.sinkhorn_iters}")
        if not self.temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        self.require_choice("pool", ("sum", "mean"))
