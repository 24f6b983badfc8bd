"""A misspelt setting on the command line gets the closest real names, not Hydra's ``+key`` hint.

Hydra answers ``attn.num_landmark=3`` with "Could not override 'attn.num_landmark'. To append
to your config use +attn.num_landmark=3", which only leads to a second error. Two paths give
``unknown setting `attn.num_landmark`; did you mean `attn.num_landmarks`?`` instead:

- ``unknown_override``, before Hydra composes anything: an override whose key is certainly not
  a setting of the run's schema (the dataclasses of ``lra_bench.config`` and, when ``attn=``
  names a registered attention, that attention's settings) is answered at once, from the
  schema alone (no composition, no torch import);
- ``unknown_setting``, from Hydra's message for what the first path leaves to Hydra (an
  ``attn.*`` key when the attention comes from a preset): the candidates are the settings of
  the config composed without the misspelt override.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import MISSING, fields, is_dataclass
from typing import Any

UNKNOWN = re.compile(r"Could not override '([^']+)'")
OTHER_CONFIG = ("--config-name", "-cn", "--config-path", "-cp")  # a config with another schema


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


def schema_names(schema: type, prefix: str = "") -> tuple[list[str], list[str]]:
    """Every dotted setting name of a dataclass schema, and those holding a list or a mapping
    (free-form below: ``attn.settings.<key>``, ``trainer.betas.0``)."""
    names: list[str] = []
    containers: list[str] = []
    for f in fields(schema):
        name = f"{prefix}{f.name}"
        names.append(name)
        made = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(made):
            sub_names, sub_containers = schema_names(type(made), name + ".")
            names += sub_names
            containers += sub_containers
        elif isinstance(made, (list, dict)):
            containers.append(name)
    return names, containers


def closest(key: str, names: Sequence[str], count: int = 1) -> list[str]:
    """Up to ``count`` names most like ``key``: first among the same section's, then among all."""
    section = key.rpartition(".")[0]
    siblings = [n for n in names if n.rpartition(".")[0] == section]
    found = difflib.get_close_matches(key, siblings, n=count, cutoff=0.6)
    return found or difflib.get_close_matches(key, names, n=count, cutoff=0.6)


LISTING = "; `python -m lra_bench --cfg job` lists the settings"


def hint(key: str, names: Sequence[str], kind: str = "setting", listing: str = LISTING) -> str:
    """``unknown setting `key`; did you mean `name`?`` (``listing`` when no name is close)."""
    found = closest(key, names)
    tail = f"; did you mean {' or '.join(f'`{n}`' for n in found)}?" if found else listing
    return f"unknown {kind} `{key}`{tail}"


def chosen_attention(overrides: Sequence[str]) -> type | None:
    """The settings dataclass of the one registered attention ``attn=<name>`` chooses, else None."""
    from lra_bench.attention.registry import REGISTRY, discover_plugins

    discover_plugins()  # the built-ins' settings and the installed plugins
    values = [o.partition("=")[2] for o in overrides if o.startswith("attn=")]
    entry = REGISTRY.get(values[-1]) if len(values) == 1 else None
    return entry.config if entry is not None else None


def unknown_override(overrides: Sequence[str]) -> str | None:
    """The hint for the first override naming no setting of the run's schema, else None.

    Left to Hydra: group choices (``task=``, ``experiment=``, ``hydra/launcher=``), ``+``/``~``
    keys, ``hydra.*``, keys below a list or mapping, ``attn.*`` when no registered attention is
    chosen on the command line, and commands naming another config.
    """
    from lra_bench.config import Config
    from lra_bench.paths import conf_dir

    if any(o.partition("=")[0] in OTHER_CONFIG for o in overrides):
        return None
    names, containers = schema_names(Config)
    attention = chosen_attention(overrides)
    if attention is not None:
        attn_names, attn_containers = schema_names(attention, "attn.")
        names += attn_names
        containers += attn_containers
    groups = {p.name for p in conf_dir().iterdir() if p.is_dir()}
    for override in overrides:
        key, sep, _ = override.partition("=")
        if not sep or key.startswith(("-", "+", "~")) or any(c in key for c in "/@'\" "):
            continue
        if key in names or key in groups or key.partition(".")[0] == "hydra":
            continue
        if any(key.startswith(f"{c}.") for c in containers):
            continue
        if key.startswith("attn.") and attention is None:
            continue
        return hint(key, names)
    return None


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
    return hint(key, [n for n in setting_names(cfg) if not n.startswith("hydra")])
