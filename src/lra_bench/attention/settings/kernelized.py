"""Kernelized attention's settings (``attn=kernelized``); the implementation is
``lra_bench.attention.kernelized``."""

from __future__ import annotations

from dataclasses import dataclass

from lra_bench.attention.registry import register_settings
from lra_bench.attention.settings.base import AttentionConfig


@register_settings("kernelized", "lra_bench.attention.kernelized:KernelizedAttention")
@dataclass
class KernelizedConfig(AttentionConfig):
    name: str = "kernelized"
    dropout: float = 0.1  # on C, as for softmax (the peer code drops kernel entries)
