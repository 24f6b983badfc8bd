"""Attention variants: the interface, the registry and every registered variant.

Importing this package imports no torch: the registry knows every built-in variant by its
settings (``settings/``) and imports a variant's module when a model is built. ``Attention``
and ``SampledAttention`` (the torch interface, ``base.py``) are imported on first access.
Installed plugins (entry-point group ``lra_bench.attention``) are registered on first use of
the registry (``available``, a lookup, ``register_attention_configs``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lra_bench.attention.registry import (
    REGISTRY,
    available,
    build_attention,
    checked_config,
    discover_plugins,
    make_config,
    register_attention,
    register_attention_configs,
    register_settings,
)
from lra_bench.attention.settings.base import AttentionConfig

if TYPE_CHECKING:
    from lra_bench.attention.base import Attention, SampledAttention

_TORCH_NAMES = ("Attention", "SampledAttention")  # from base.py, imported on first access


def __getattr__(name: str) -> Any:
    """``Attention`` and ``SampledAttention`` import torch: only when asked for."""
    if name in _TORCH_NAMES:
        from lra_bench.attention import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "REGISTRY",
    "Attention",
    "AttentionConfig",
    "SampledAttention",
    "available",
    "discover_plugins",
    "build_attention",
    "make_config",
    "register_attention",
    "register_settings",
    "checked_config",
    "register_attention_configs",
]
