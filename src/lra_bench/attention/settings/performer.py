"""Performer's settings (``attn=performer``); the implementation is
``lra_bench.attention.performer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import IMPLS, AttentionConfig

CHOICES = {
    "score_scale": ("inv_sqrt_d", "inv_d"),
    "padded_keys": ("removed", "zeroed"),
    "stabilizer": ("per_sequence", "global"),
    "impl": IMPLS,
}


@register_settings("performer", "lra_bench.attention.performer:PerformerAttention")
@dataclass
class PerformerConfig(AttentionConfig):
    name: str = "performer"
    dropout: float = 0.0
    num_features: int = 128
    orthogonal: bool = True  # orthogonal blocks (FAVOR+) | false: i.i.d. Gaussian rows
    redraw: str = (
        "fresh"  # fresh: new features every training forward | fixed: always the seeded eval draw
    )
    # added to every feature after the max shift (numerical stabiliser of the paper's code)
    eps: float = 1e-6
    # inv_sqrt_d: softmax(q k^T / sqrt d) | inv_d: / d (q, k scaled twice, as the peer code)
    score_scale: str = "inv_sqrt_d"
    # removed: out of both sums | zeroed: zero vectors, still in the normaliser (peer code)
    padded_keys: str = "removed"
    # per_sequence: key max per sequence and head | global: one max over the batch (peer code)
    stabilizer: str = "per_sequence"
    # true: each orthogonal block's QR factor sign-corrected (diag(R) > 0), uniform over
    # rotations | false: as torch's QR returns it (the Skyformer code, qr_uniform_q=False)
    qr_uniform: bool = True
    impl: str = (
        "fast"  # fast: feature maps per chunk, rebuilt in backward | reference: plain autograd
    )

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_no_dropout("performer has")
        if self.num_features < 1:
            raise ValueError(f"num_features: must be >= 1, got {self.num_features}")
        self.require_choice("redraw", ("fresh", "fixed"))
        if self.eps < 0:
            raise ValueError(f"eps: must be >= 0, got {self.eps}")
        for key, choices in CHOICES.items():
            self.require_choice(key, choices)
