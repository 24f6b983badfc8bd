"""One run owns its run folder: a lock file naming the holder's host, PID and start time.

A second process started on the same folder (the same command twice, a re-submitted cluster
job while the first still runs) stops at once with one line instead of interleaving
checkpoints. The holder also keeps an ``flock`` on the file, which the kernel drops when the
process dies, so a lock left by a killed process on this host is recognised and taken over
with a notice. Under torchrun only rank 0 takes the lock; the other ranks learn the outcome
from a collective and stop with it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lra_bench.distributed import DistInfo, all_sum
from lra_bench.errors import RunError

LOCK_NAME = "run.lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as err:
        return err.errno == errno.EPERM
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 4096)
    try:
        holder = json.loads(raw.decode()) if raw else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        holder = {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict[str, Any]) -> str:
    host, pid, started = (holder.get(key, "?") for key in ("host", "pid", "started"))
    return f"host {host}, PID {pid}, started {started}"


def _held_error(run_dir: Path, holder: dict[str, Any]) -> RunError:
    return RunError(
        f"run folder {run_dir} is in use by another run ({_describe(holder)}): wait for it to "
        "finish (re-running the same command then resumes or reports it complete), or choose "
        "another folder with paths.run_dir=..."
    )


class RunLock:
    """An acquired run-folder lock; ``release()`` removes the file and drops the ``flock``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Take ``run_dir/run.lock`` or raise ``RunError`` naming the holder."""
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK_NAME
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise _held_error(run_dir, holder) from None
            if _same_file(fd, path):
                break
            os.close(fd)  # the file was removed by its releasing holder in between: try again
        lock = cls(path, fd)
        lock._take_over(run_dir, _read_holder(fd))
        return lock

    def _take_over(self, run_dir: Path, previous: dict[str, Any]) -> None:
        """Check a leftover record (a holder that died without releasing), then write ours."""
        host = socket.gethostname()
        if previous:
            if previous.get("host") != host:
                os.close(self.fd)
                raise RunError(
                    f"run folder {run_dir} has a lock from another machine "
                    f"({_describe(previous)}) that this machine cannot check: if that run is "
                    f"gone, delete {self.path}; else wait or use paths.run_dir=..."
                )
            if _pid_alive(int(previous.get("pid", 0) or 0)):  # no flock here: trust the PID
                os.close(self.fd)
                raise _held_error(run_dir, previous)
            print(
                f"notice: taking over the stale lock in {run_dir}: "
                f"its holder ({_describe(previous)}) is gone",
                file=sys.stderr,
            )
        record = {"host": host, "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        os.write(self.fd, (json.dumps(record) + "\n").encode())
        os.fsync(self.fd)

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


@contextmanager
def hold_run_folder(run_dir: Path, info: DistInfo, device: torch.device) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the block; rank 0 takes it and every rank learns the outcome."""
    lock, problem = None, None
    if info.is_main:
        try:
            lock = RunLock.acquire(Path(run_dir))
        except RunError as err:
            problem = err
    refused = all_sum([float(problem is not None)], info, device)[0] > 0  # doubles as the barrier
    if problem is not None:
        raise problem
    if refused:
        raise RunError(f"run folder {run_dir} is in use by another run (see rank 0's message)")
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
