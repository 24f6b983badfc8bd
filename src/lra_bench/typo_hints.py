"""A misspelt setting on the command line gets the closest real names, not Hydra's ``+key`` hint.

Hydra answers ``attn.num_landmark=3`` with "Could not override 'attn.num_landmark'. To append
to your config use +attn.num_landmark=3", which only leads to a second error. ``unknown_setting``
turns that into ``unknown setting `attn.num_landmark`; did you mean `attn.num_landmarks`?``,
the candidates being the settings of the config composed without the misspelt override
(so an attention's own settings are those of the attention chosen).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

UNKNOWN = re.compile(r"Could not override '([^']+)'")


def setting_names(node: Any, prefix: str = "") -> list[str]:
    """Every dotted setting name under a config node (lists are leaves)."""
    from omegaconf import DictConfig

    names = []
    for key in node.keys() if isinstance(node, DictConfig) else ():
        name = f"{prefix}{key}"
        child = node._get_node(key)
        names.append(name)
        if isinstance(child, DictConfig):
            names.extend(setting_names(child, name + "."))
    return names


def closest(key: str, names: Sequence[str], count: int = 1) -> list[str]:
    """Up to ``count`` names most like ``key``: first among the same section's, then among all."""
    section = key.rpartition(".")[0]
    siblings = [n for n in names if n.rpartition(".")[0] == section]
    found = difflib.get_close_matches(key, siblings, n=count, cutoff=0.6)
    return found or difflib.get_close_matches(key, names, n=count, cutoff=0.6)


def unknown_setting(message: str, overrides: Sequence[str]) -> str | None:
    """The one-line hint for Hydra's unknown-key message, or None for other messages."""
    match = UNKNOWN.search(message)
    if match is None:
        return None
    key = match.group(1).lstrip("+~")
    others = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key and "=" in o]
    try:
        from lra_bench.compose import compose_config

        cfg = compose_config([o for o in others if not o.startswith(("hydra", "-"))])
    except Exception:  # the other overrides have problems of their own: no suggestion then
        return f"unknown setting `{key}`"
    names = [n for n in setting_names(cfg) if not n.startswith("hydra")]
    found = closest(key, names)
    if not found:
        return f"unknown setting `{key}`; `python -m lra_bench --cfg job` lists the settings"
    return f"unknown setting `{key}`; did you mean {' or '.join(f'`{n}`' for n in found)}?"
