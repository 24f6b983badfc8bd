"""Every built-in attention's settings: one dataclass per variant, with no torch import.

Composing a run's config (Hydra's ``attn`` group) needs only these dataclasses, so a typo
or a ``--help`` costs no torch import. Each module registers its dataclass with
``@register_settings(name, "module:Class")``, the class implementing it; the registry imports
that module only when a model is built. A new variant is its settings module here and its
implementation module in ``lra_bench.attention``.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module


def import_all() -> None:
    """Import each settings module of this package, so every built-in variant registers itself."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            import_module(f"{__name__}.{info.name}")
