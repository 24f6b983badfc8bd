"""Skyformer's settings (``attn=skyformer``); the implementation is
``lra_bench.attention.skyformer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import IMPLS, PINV_INITS, AttentionConfig


@register_settings("skyformer", "lra_bench.attention.skyformer:SkyformerAttention")
@dataclass
class SkyformerConfig(AttentionConfig):
    name: str = "skyformer"
    dropout: float = 0.0
    num_landmarks: int = 128
    gamma: float = 0.1  # nugget added to the landmark kernel matrix W
    pinv_iters: int = 6
    landmarks_from: str = (
        "split"  # split: half from Q, half from K | joint: uniform over all 2n rows (the paper)
    )
    # per_matrix: M^T/(||M||_1 ||M||_inf) | batch: M^T / max over the batch of ||M||_1 (peer
    # code)
    pinv_init: str = "per_matrix"
    impl: str = "fast"  # fast: chunked blocks, rebuilt in backward | reference: plain autograd

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_no_dropout("skyformer forms")
        self.require_up_to_max_len("num_landmarks", max_len)
        if self.gamma < 0:
            raise ValueError(f"gamma: must be >= 0, got {self.gamma}")
        if self.pinv_iters < 1:
            raise ValueError(f"pinv_iters: must be >= 1, got {self.pinv_iters}")
        self.require_choice("landmarks_from", ("split", "joint"))
        self.require_choice("pinv_init", PINV_INITS)
        self.require_choice("impl", IMPLS)
