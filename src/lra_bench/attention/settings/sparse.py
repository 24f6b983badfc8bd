"""Sparse Transformer attention's settings (``attn=sparse``); the implementation is
``lra_bench.attention.sparse``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("sparse", "lra_bench.attention.sparse:SparseAttention")
@dataclass
class SparseConfig(AttentionConfig):
    name: str = "sparse"
    dropout: float = 0.0
    stride: int = 128  # l: block length
    summary: int = 32  # c: the last c positions of every block are seen by every query
    causal: bool = False  # true: keys after the query are hidden (the LRA code)
    block_start_summary: bool = (
        False  # true: each block's first position is a summary too (the LRA code)
    )

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_up_to_max_len("stride", max_len)
        if not 0 <= self.summary <= self.stride:
            raise ValueError(
                f"summary: must be between 0 and stride ({self.stride}), got {self.summary}"
            )
