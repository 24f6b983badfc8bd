"""Synthesizer's settings (``attn=synthesizer``); the implementation is
``lra_bench.attention.synthesizer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("synthesizer", "lra_bench.attention.synthesizer:SynthesizerAttention")
@dataclass
class SynthesizerConfig(AttentionConfig):
    name: str = "synthesizer"
    dropout: float = 0.0
    # dense: MLP logits | random: a trained [max_len, max_len] logit matrix per head |
    # dense_random: both
    mode: str = "dense"
    dot_product: bool = False  # true: add q.k / sqrt d to the synthetic logits (the LRA code)

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_choice("mode", ("dense", "random", "dense_random"))
