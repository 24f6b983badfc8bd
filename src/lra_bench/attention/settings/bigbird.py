"""BigBird's settings (``attn=bigbird``); the implementation is ``lra_bench.attention.bigbird``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("bigbird", "lra_bench.attention.bigbird:BigBirdAttention")
@dataclass
class BigBirdConfig(AttentionConfig):
    name: str = "bigbird"
    dropout: float = 0.0
    block_size: int = 64
    window_blocks: int = 3  # sliding window: this block and (window_blocks - 1) / 2 on each side
    num_random_blocks: int = 3
    # fresh: new random blocks every training call | fixed: reseeded with pattern_seed every
    # call
    pattern: str = "fresh"
    pattern_seed: int = 42  # seed of the fixed pattern (the Skyformer code's default --random 42)
    # real: the last block holding a real token | padded: the padded sequence's last block
    last_global: str = "real"
    # all | first_1024: from the first 1024 tokens when n is 1024, 3072 or 4096 | code: the
    # code's plans
    random_span: str = "all"
    # drop: a key block counted once | keep: a random block repeating a window block counts
    # twice
    duplicates: str = "drop"
    # torch: this module's generator | numpy: the code's own draw (numpy seeded with pattern_seed,
    # its permutations in its order), the code's pattern itself; needs random_span: code
    draw: str = "torch"

    def check(self, *, max_len: int, head_dim: int) -> None:
        super().check(max_len=max_len, head_dim=head_dim)
        self.require_up_to_max_len("block_size", max_len)
        if self.window_blocks < 1 or self.window_blocks % 2 == 0:
            raise ValueError(f"window_blocks: must be odd and >= 1, got {self.window_blocks}")
        if self.num_random_blocks < 0:
            raise ValueError(f"num_random_blocks: must be >= 0, got {self.num_random_blocks}")
        self.require_choice("pattern", ("fresh", "fixed"))
        self.require_choice("last_global", ("real", "padded"))
        self.require_choice("random_span", ("all", "first_1024", "code"))
        self.require_choice("duplicates", ("drop", "keep"))
        self.require_choice("draw", ("torch", "numpy"))
        if self.draw == "numpy" and (self.random_span, self.pattern) != ("code", "fixed"):
            raise ValueError(
                "draw: numpy reproduces the code's fixed pattern; set random_span: code and "
                f"pattern: fixed (got {self.random_span}, {self.pattern})"
            )
