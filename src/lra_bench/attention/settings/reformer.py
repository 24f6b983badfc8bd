"""Reformer's settings (``attn=reformer``); the implementation is
``lra_bench.attention.reformer``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("reformer", "lra_bench.attention.reformer:ReformerAttention")
@dataclass
class ReformerConfig(AttentionConfig):
    name: str = "reformer"
    dropout: float = 0.0
    num_hashes: int = 2
    chunk_size: int = 64  # tokens per chunk of the sorted sequence
    # 0 = 2 * ceil(max_len / chunk_size) (the paper's n_buckets = 2 n / chunk); else 1 or even
    num_buckets: int = 0
    same_bucket_only: bool = (
        False  # also mask keys of another bucket inside the window (off in the reference code)
    )
    wrap: bool = True  # the first chunk also sees a last chunk (as the Trax and Hugging Face code)
    # real: the last chunk holding a real token | padded: the padded sequence's last chunk
    # (Hugging Face)
    wrap_to: str = "real"
    # True: rounds sorted as one sequence, round r's first chunk sees round r-1's last
    # (Hugging Face)
    rounds_joined: bool = False
    # clamp: q / max(|q|, 1e-6) | root: q / sqrt(|q|^2 + d 1e-6) (Hugging Face's
    # _len_and_dim_norm)
    key_norm: str = "clamp"

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        if self.num_hashes < 1:
            raise ValueError(f"num_hashes: must be >= 1, got {self.num_hashes}")
        self.require_up_to_max_len("chunk_size", max_len)
        if self.num_buckets < 0 or (self.num_buckets > 1 and self.num_buckets % 2):
            raise ValueError(f"num_buckets: must be 0 (auto), 1 or even, got {self.num_buckets}")
        if not isinstance(self.wrap, bool):
            raise ValueError(f"wrap: must be true or false, got {self.wrap!r}")
        if not isinstance(self.rounds_joined, bool):
            raise ValueError(f"rounds_joined: must be true or false, got {self.rounds_joined!r}")
        self.require_choice("wrap_to", ("real", "padded"))
        self.require_choice("key_norm", ("clamp", "root"))
