"""Informer's settings (``attn=informer``); the implementation is
``lra_bench.attention.informer``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("informer", "lra_bench.attention.informer:InformerAttention")
@dataclass
class InformerConfig(AttentionConfig):
    name: str = "informer"
    dropout: float = 0.0
    factor: int = 5  # c: c ceil(ln L) sampled keys per query and selected queries
    nb_features: int = (
        0  # > 0: c = ceil(nb_features / ln max_len) instead of `factor` (Skyformer code: 128)
    )
    sparsity_mean: str = (
        "samples"  # samples: max - sum / U (the paper) | length: max - sum / L (the published code)
    )
    ignore_mask: bool = (
        False  # true: padded tokens are keys and queries like real ones (the Skyformer code)
    )
    # per_sequence: every sequence and head samples its own keys | shared: one draw [n, U] over
    # all n positions, padding included, for the batch and heads (the Skyformer code's randint)
    key_samples: str = "per_sequence"

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        if self.factor < 1:
            raise ValueError(f"factor: must be >= 1, got {self.factor}")
        if self.nb_features < 0:
            raise ValueError(f"nb_features: must be >= 0 (0 = use factor), got {self.nb_features}")
        self.require_choice("sparsity_mean", ("samples", "length"))
        self.require_choice("key_samples", ("per_sequence", "shared"))

    def effective_factor(self, max_len: int) -> int:
        """c: ``factor``, or ceil(nb_features / ln max_len) when ``nb_features`` is set."""
        if self.nb_features:
            return max(1, math.ceil(self.nb_features / math.log(max(max_len, 2))))
        return self.factor
