"""``attn=custom``: the stand-in that builds the target class (settings: ``settings/custom.py``)."""

from __future__ import annotations

from lra_bench.attention.base import Attention
from lra_bench.attention.settings.custom import CustomConfig


class CustomAttention(Attention):
    """Stands for the target: constructing it builds the target class with its typed settings."""

    def __new__(
        cls, cfg: CustomConfig, *, head_dim: int, num_heads: int, max_len: int
    ) -> Attention:  # type: ignore[misc]
        return cfg.target_class()(
            cfg.target_config(), head_dim=head_dim, num_heads=num_heads, max_len=max_len
        )
