"""Where a bench run writes: a new timestamped file set per run, and a ``latest`` copy.

``results/bench/attention-20261203-211500.csv`` (and ``.md``, ``.png``) belong to one run and
are never written again; ``attention.csv`` and its siblings are copies of the latest run's. A
file already at a copy's name that is not a copy of any timestamped file (written before this
scheme) is first renamed to a timestamped name of its own, so that no result is lost.
"""

from __future__ import annotations

import filecmp
import shutil
import time
from pathlib import Path

SUFFIXES = (".csv", ".md", ".png")


def stamp(seconds: float | None = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(seconds))


def new_stem(base: Path, when: str | None = None) -> Path:
    """``base-<when, default now>``, unused by any earlier run (``-2``, ``-3``... after it)."""
    when = when or stamp()
    stem, count = base.with_name(f"{base.name}-{when}"), 1
    while any(stem.with_suffix(s).exists() for s in SUFFIXES):
        count += 1
        stem = base.with_name(f"{base.name}-{when}-{count}")
    return stem


def _keep_unstamped(latest: Path, base: Path) -> None:
    """Rename ``latest`` to a timestamped name when no timestamped file holds the same bytes."""
    if not latest.exists():
        return
    twins = latest.parent.glob(f"{base.name}-*{latest.suffix}")
    if any(filecmp.cmp(latest, twin, shallow=False) for twin in twins):
        return
    kept = new_stem(base, f"{stamp(latest.stat().st_mtime)}-earlier")
    latest.rename(kept.with_suffix(latest.suffix))


def publish_latest(stem: Path, base: Path) -> list[Path]:
    """Copy this run's files (``stem.*``) to ``base.*``; returns the copies written."""
    written = []
    for suffix in SUFFIXES:
        source = stem.with_suffix(suffix)
        latest = base.with_suffix(suffix)
        if not source.exists():
            continue
        _keep_unstamped(latest, base)
        tmp = latest.with_name(f".{latest.name}.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(latest)
        written.append(latest)
    return written
