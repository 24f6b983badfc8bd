"""The settings every attention variant accepts, and the choices several variants share."""

from __future__ import annotations

from dataclasses import dataclass

IMPLS = (
    "fast",
    "reference",
)  # variants with a fast path: it, or the plain form it is tested against
PINV_INITS = ("per_matrix", "batch")  # Newton-Schulz starts of the pseudo-inverse (``pinv.py``)


@dataclass
class AttentionConfig:
    """Fields every variant accepts; variants subclass this with their own hyper-parameters."""

    name: str = "softmax"
    dropout: float = 0.0  # dropout on attention weights (where a variant has them)
    seed: int = 1234  # seed of the fixed eval-mode draws (sampling variants)

    def check(self, *, max_len: int, head_dim: int) -> None:
        """Raise ValueError('key: rule') on an invalid value; max_len/head_dim are the task's."""
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")

    def require_choice(self, key: str, choices: tuple[str, ...]) -> None:
        """Raise ValueError('key: choose a, b or c, got ...') unless ``key`` is one of
        ``choices``."""
        value = getattr(self, key)
        if value not in choices:
            listed = (
                ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
            )
            raise ValueError(f"{key}: choose {listed}, got {value!r}")
