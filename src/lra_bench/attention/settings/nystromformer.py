"""Nystromformer's settings (``attn=nystromformer``); the implementation is
``lra_bench.attention.nystromformer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import IMPLS, PINV_INITS, AttentionConfig


@register_settings("nystromformer", "lra_bench.attention.nystromformer:NystromformerAttention")
@dataclass
class NystromformerConfig(AttentionConfig):
    name: str = "nystromformer"
    dropout: float = 0.0
    num_landmarks: int = 128
    pinv_iters: int = 6
    # per_matrix: M^T/(||M||_1 ||M||_inf) | batch: M^T / max over the batch of ||M||_1 (the
    # code's)
    pinv_init: str = "per_matrix"
    # depthwise conv on V along the sequence; 0 = off (as the code behind the Skyformer table)
    conv_kernel: int = 35
    impl: str = (
        "fast"  # fast: fused attention kernels for the n x m factors | reference: plain autograd
    )
    # real: segments of the real tokens | padded: segments of the padded length, padded rows zeroed
    # and counted in the means (pkuzengqi/Skyformer code/models/attention_nystrom.py at 6ffd607)
    landmark_span: str = "real"

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_no_dropout("nystromformer has")
        self.require_up_to_max_len("num_landmarks", max_len)
        if self.pinv_iters < 1:
            raise ValueError(f"pinv_iters: must be >= 1, got {self.pinv_iters}")
        self.require_choice("pinv_init", PINV_INITS)
        self.require_choice("impl", IMPLS)
        self.require_choice("landmark_span", ("real", "padded"))
        if self.conv_kernel < 0 or (self.conv_kernel > 0 and self.conv_kernel % 2 == 0):
            raise ValueError(f"conv_kernel: must be 0 (off) or an odd size, got {self.conv_kernel}")
