"""Run folder names from command-line overrides: one level deep, readable, stable.

Hydra's ``override_dirname`` puts values in folder names as they are, so a path value
(``data.root=/data/lra``) would nest folders. Here a value holding a ``/`` becomes its last
part plus a short hash of the whole value (``data.root=lra-1a2b3c4d``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import PurePath

from omegaconf import OmegaConf

RESOLVER = "lra_run_name"


def _readable(value: str) -> str:
    if "/" not in value:
        return value
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", PurePath(value).name) or "root"
    return f"{tail}-{hashlib.sha1(value.encode()).hexdigest()[:8]}"


def run_folder_name(overrides: Sequence[str], exclude_keys: Sequence[str]) -> str:
    """``key=value`` pairs joined by commas in key order, without ``exclude_keys``, path values shortened."""
    items = []
    for override in sorted(overrides, key=lambda o: o.partition("=")[0].lstrip("+~")):
        key, sep, value = override.partition("=")
        if key.lstrip("+~") in exclude_keys:
            continue
        items.append(f"{key}{sep}{_readable(value)}")
    return ",".join(items)


def register_resolver() -> None:
    """Make ``${lra_run_name:<overrides>,<exclude keys>}`` available to the configs."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(
            RESOLVER, lambda overrides, exclude: run_folder_name(list(overrides), list(exclude))
        )
