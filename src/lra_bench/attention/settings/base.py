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

    def require_up_to_max_len(self, key: str, max_len: int, low: int = 1) -> None:
        """Raise ValueError unless ``low <= key <= max_len`` (a size counted in tokens)."""
        value = getattr(self, key)
        if not low <= value <= max_len:
            raise ValueError(
                f"{key}: must be between {low} and the task's max length {max_len}, got {value}"
            )

    def require_no_dropout(self, variant: str) -> None:
        """Raise ValueError unless ``dropout`` is 0: ``variant`` (e.g. "performer has") forms no
        attention weights a dropout could act on."""
        if self.dropout != 0.0:
            raise ValueError(
                f"dropout: {variant} no attention weights to drop, must be 0, got {self.dropout}"
            )

    def require_choice(self, key: str, choices: tuple[str, ...]) -> None:
        """Raise ValueError('key: choose a, b or c, got ...') unless ``key`` is one of
        ``choices``."""
        value = getattr(self, key)
        if value not in choices:
            listed = (
                ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
            )
            raise ValueError(f"{key}: choose {listed}, got {value!r}")
