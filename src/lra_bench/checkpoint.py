"""Checkpoints that cannot lie: written atomically with a content digest, loaded with
``weights_only=True`` and checked against that digest; plus the per-rank random streams they carry.

A checkpoint is serialised in memory, then written to a temporary sibling, flushed to disk and
renamed into place, so ``path`` always holds the old or the new complete file and a full disk
is reported as such (``DiskFullError``) instead of as a failure inside torch's zip writer.
``keep_previous`` keeps the file being replaced as ``<stem>.prev.pt`` (``last.prev.pt``), the
fallback when the newest one turns out damaged.

A checkpoint marked ``complete`` (a finished run's ``last.pt``) gets a small record beside it,
``<stem>.complete.json``: the SHA-256 and size of the file's bytes and its ``config_hash``. A
relaunch checks the file against it (``verified_complete``: hashing the bytes, no unpickling)
instead of loading the weights; any changed byte fails the check and the full load decides.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from lra_bench.distributed import DistInfo
from lra_bench.errors import RunError
from lra_bench.io import atomic_write, atomic_write_json, temporary_sibling, write_synced

DIGEST_KEY = "content_sha256"
RECORD_SUFFIX = ".complete.json"


class CheckpointError(RunError):
    """A checkpoint that cannot be read, or whose content does not match its digest."""


def content_digest(obj: Any) -> str:
    """SHA-256 over a checkpoint's structure and every tensor's dtype, shape and bytes.

    Walks dicts (in their order), lists and tuples; other leaves enter by type and ``repr``.
    The same content gives the same digest before saving and after loading.
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)}".encode())
        for value in obj:
            _feed(h, value)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def previous_of(path: Path) -> Path:
    """Where ``keep_previous`` keeps the file it replaces: ``last.pt`` -> ``last.prev.pt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_atomic(state: dict[str, Any], path: Path, keep_previous: bool = False) -> None:
    """Save ``state`` with its digest so that ``path`` always holds an old or new complete
    checkpoint.

    With ``keep_previous`` the checkpoint being replaced is first kept as ``previous_of(path)``
    (a hard link, or a copy where links are not supported), so both names always exist whole.
    """
    path = Path(path)
    buf = io.BytesIO()
    torch.save({**state, DIGEST_KEY: content_digest(state)}, buf)
    if keep_previous and path.exists():
        _keep_copy(path, previous_of(path))
    record = record_of(path)
    record.unlink(missing_ok=True)  # a record never describes another file than this one
    atomic_write(path, lambda tmp: write_synced(tmp, buf.getbuffer()))
    if state.get("complete"):
        data = buf.getbuffer()
        sha = hashlib.sha256(data).hexdigest()
        atomic_write_json(
            record,
            {"file_sha256": sha, "bytes": len(data), "config_hash": state.get("config_hash")},
        )


def record_of(path: Path) -> Path:
    """The completion record of a checkpoint: ``last.pt`` -> ``last.complete.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{RECORD_SUFFIX}")


def verified_complete(path: Path, config_hash: str) -> bool:
    """Whether ``path`` is, byte for byte, the complete checkpoint of ``config_hash`` its record
    describes (False when there is no record, or anything differs: the caller then loads it)."""
    try:
        record = json.loads(record_of(path).read_text())
        if record.get("config_hash") != config_hash or path.stat().st_size != record["bytes"]:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest() == record["file_sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _keep_copy(path: Path, target: Path) -> None:
    """Make ``target`` a complete copy of ``path`` (atomically replacing what was there)."""
    tmp = temporary_sibling(target)
    try:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def load(path: Path) -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic`` (tensors and plain containers only) and check
    its digest.

    A file that cannot be read, is not a checkpoint, holds other objects, or whose content
    does not match its digest raises ``CheckpointError`` (one line naming the file).
    Checkpoints written before digests existed load unchecked.
    """
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers: it is not a checkpoint "
            "this program wrote, and is not loaded"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        detail = "truncated or not a checkpoint" if isinstance(err, OSError) else _short(err)
        why = "an empty file" if path.stat().st_size == 0 else f"cannot be read: {detail}"
        raise CheckpointError(f"{path} is damaged ({why})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{path} is damaged (it holds a {type(saved).__name__}, not a checkpoint)"
        )
    stored = saved.pop(DIGEST_KEY, None)
    if stored is not None and stored != content_digest(saved):
        raise CheckpointError(
            f"{path} is damaged (its content does not match the digest stored in it)"
        )
    return saved


def _short(err: BaseException) -> str:
    """The first line of an exception's message, trimmed (torch's reader messages span lines)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].removeprefix("PytorchStreamReader ")[:160]


def local_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's RNG streams: the host generator and, on a GPU, its own device's generator."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "device_type": device.type}
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    return state


def rank_rng_states(info: DistInfo, device: torch.device, gather: bool = True) -> dict[str, Any]:
    """Every rank's RNG streams, ``{"world_size": N, "ranks": [state of rank 0, ...]}``.

    With ``gather`` every rank must call this (a collective); without it only this rank's
    state is kept (for a checkpoint no run resumes from, e.g. a complete one).
    """
    own = local_rng_state(device)
    if not (gather and info.enabled):
        return {"world_size": info.world_size, "ranks": [own]}
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, own)
    return {"world_size": info.world_size, "ranks": states}


def restore_rng_states(saved: dict[str, Any], info: DistInfo, device: torch.device) -> str | None:
    """Restore this rank's RNG streams from ``saved``; a notice when the world size changed.

    A rank the checkpoint has no state for keeps its freshly seeded streams; a device state is
    restored only onto a device of the same type. Older checkpoints (one host state and every
    visible GPU's state, written by rank 0) are read as a one-rank checkpoint.
    """
    if "ranks" not in saved:  # older layout
        legacy = {"torch": saved["torch"], "device_type": "cuda" if saved.get("cuda") else "cpu"}
        if saved.get("cuda"):
            legacy["device"] = saved["cuda"][0]
        saved = {"world_size": 1, "ranks": [legacy]}
    ranks = saved["ranks"]
    if info.rank < len(ranks):
        own = ranks[info.rank]
        torch.set_rng_state(own["torch"])
        if device.type == "cuda" and own.get("device_type") == "cuda":
            torch.cuda.set_rng_state(own["device"], device)
    if saved["world_size"] == info.world_size:
        return None
    kept = min(saved["world_size"], info.world_size)
    return (
        f"note: the checkpoint was written by {saved['world_size']} rank(s), "
        f"resuming on {info.world_size}: "
        f"the random streams of ranks 0..{kept - 1} are restored, the others start fresh "
        "(the run goes on, but is not bit-identical to an uninterrupted one)"
    )
