"""Attention entries of the bench: ``name`` or ``name:key=value[:key=value]``, resolved to configs.

``softmax`` is the SDPA kernel; ``softmax:impl=math`` is the materialised n x n form, labelled
``softmax-math``. ``all`` stands for every registered variant plus ``softmax:impl=math``
(baselines first). A ``label=...`` option names the row explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from lra_bench.attention import available, make_config
from lra_bench.errors import BenchError

ALL = "all"
EXTRA_IN_ALL = ["softmax:impl=math"]  # the papers' baseline, reported beside SDPA softmax


@dataclass(frozen=True)
class Variant:
    """One row of the bench: a registered attention with its full, validated config."""

    label: str
    name: str
    options: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def options_text(self) -> str:
        return ":".join(f"{k}={v}" for k, v in self.options.items())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def default_label(name: str, options: dict[str, str]) -> str:
    """``softmax`` + ``impl=math`` -> ``softmax-math``; numbers keep their key:
    ``skyformer-num_landmarks=64``."""
    parts = [name]
    for key, value in options.items():
        named = _is_number(value) or value.lower() in ("true", "false", "null", "none")
        parts.append(f"{key}={value}" if named else value)
    return "-".join(parts)


def parse_entry(entry: str) -> tuple[str, dict[str, str], str]:
    """``name:key=value:...`` -> (name, options, label)."""
    name, *opts = [part.strip() for part in str(entry).split(":")]
    options: dict[str, str] = {}
    for opt in opts:
        key, sep, value = opt.partition("=")
        if not sep or not key.strip():
            raise BenchError(
                f"attention entry {entry!r}: write options as name:key=value[:key=value]"
            )
        options[key.strip()] = value.strip()
    label = options.pop("label", "") or default_label(name, options)
    return name, options, label


def split_entries(value: Any) -> list[str]:
    """A list, or a comma-separated string, of entries."""
    items = [value] if isinstance(value, str) else list(value)
    return [part.strip() for item in items for part in str(item).split(",") if part.strip()]


def everything() -> list[str]:
    """``all``: softmax and softmax-math first (the baselines), then every other variant by name."""
    return ["softmax", *EXTRA_IN_ALL, *(name for name in available() if name != "softmax")]


def resolve(entries: Any, dropout: float | None = None) -> list[Variant]:
    """Validated variants for ``entries``; ``dropout`` (unless None) replaces each one's own."""
    names = available()
    expanded: list[str] = []
    for entry in split_entries(entries):
        expanded.extend(everything() if entry == ALL else [entry])
    if not expanded:
        raise BenchError("attns: give at least one attention (or all)")
    variants: list[Variant] = []
    for entry in expanded:
        name, options, label = parse_entry(entry)
        if name not in names:
            raise BenchError(
                f"unknown attention {name!r}; choose from: {', '.join(names)} (or all)"
            )
        config: dict[str, Any] = {**options, "name": name}  # the rest: the dataclass defaults
        if dropout is not None:
            config["dropout"] = dropout
        try:
            typed = make_config(config)
        except ValueError as err:
            raise BenchError(f"attention {label}: {err}") from None
        clean = OmegaConf.to_container(OmegaConf.structured(typed))
        assert isinstance(clean, dict)
        variant = Variant(label, name, options, {str(k): v for k, v in clean.items()})
        twin = next((v for v in variants if v.label == label), None)
        if twin is not None:
            if twin.config == variant.config:
                continue  # e.g. "all,softmax": one row
            raise BenchError(
                f"two attention entries are labelled {label!r}; add :label=... to one of them"
            )
        variants.append(variant)
    return variants
