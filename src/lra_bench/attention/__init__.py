"""Attention variants: the interface, the registry and every registered variant.

Importing this package imports every module in it, so each variant registers itself;
installed plugins (entry-point group ``lra_bench.attention``) are registered on first use of
the registry (``available``, a lookup, ``register_attention_configs``).
"""

import pkgutil
from importlib import import_module

from lra_bench.attention.base import Attention, AttentionConfig, SampledAttention
from lra_bench.attention.registry import (
    REGISTRY,
    available,
    build_attention,
    checked_config,
    discover_plugins,
    make_config,
    register_attention,
    register_attention_configs,
)


def _import_every_module() -> None:
    """Import each module of this package, so every variant registers itself: a new variant is
    one new file, with no list to update."""
    for info in pkgutil.iter_modules(__path__):
        import_module(f"{__name__}.{info.name}")


_import_every_module()

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
    "checked_config",
    "register_attention_configs",
]
