"""Atomic file and folder writes: readers see the old complete content or the new, never half.

Temporary names are unique per process and call, so two processes writing the same target
never trip over each other's temporary file.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from lra_bench.errors import DiskFullError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def temporary_sibling(path: Path) -> Path:
    """A hidden name next to ``path`` that no other process or call uses."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def no_space(path: Path) -> DiskFullError:
    """The one-line error for a full disk (or an exhausted quota) met while writing ``path``."""
    return DiskFullError(
        f"no space left on device writing {path}; free space there and re-run the same command "
        "(a run resumes from its last checkpoint)"
    )


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary sibling, then rename it onto ``path``.

    A full disk raises ``DiskFullError`` naming ``path``; ``path`` keeps its old content.
    """
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space(path) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_synced(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` and flush it to the disk (before a rename makes it visible)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str))


def atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """A CSV with a header line; keys of a row outside
    ``columns`` are left out, missing ones empty."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it is renamed to ``target``, on failure removed.

    The caller holds a lock that keeps other writers of ``target`` out (``target`` must not exist).
    """
    target = Path(target)
    tmp = temporary_sibling(target)
    try:
        tmp.mkdir(parents=True)
        yield tmp
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def build_lock(lock_path: Path, done_marker: Path) -> Iterator[None]:
    """Hold a file lock while building something whose completion ``done_marker`` marks.

    The lock file is removed once the marker exists: anyone still waiting on the removed file
    then finds the build done and skips it, so no empty ``.lock`` files are left behind. A build
    that fails (missing data) removes it too: a waiter then tries, and fails, the same way.
    """
    lock_path = Path(lock_path)
    try:
        with FileLock(str(lock_path)):
            yield
    except BaseException:
        lock_path.unlink(missing_ok=True)
        raise
    if Path(done_marker).exists():
        lock_path.unlink(missing_ok=True)


def build_dir_once(target: Path, marker: str, fill: Callable[[Path], Any]) -> Path:
    """Make the folder ``target`` with ``fill(tmp)`` unless ``target/marker`` exists; return it.

    Concurrent builders wait on ``build_lock`` beside ``target``; the first builds in a
    temporary sibling renamed into place (``atomic_dir``), the others find it complete. An
    incomplete folder (from an interrupted build of an older version) is replaced.
    """
    target = Path(target)
    done = target / marker
    if done.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(Path(str(target) + ".lock"), done):
        if done.exists():
            return target
        if target.exists():
            shutil.rmtree(target)
        with atomic_dir(target) as tmp:
            fill(tmp)
    return target
