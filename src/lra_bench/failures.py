"""Failures of the machine, not of the input, as one line: out of memory and a full disk.

``doing(what, device)`` wraps a phase of a run; an out-of-memory error inside it becomes a
``RunError`` naming the phase and the device, a full disk (``ENOSPC``) one naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from lra_bench.errors import LraBenchError, RunError
from lra_bench.io import NO_SPACE, no_space

_ALLOCATION = re.compile(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]?i?B|\d+ bytes)")


def is_out_of_memory(err: BaseException) -> bool:
    """torch's CUDA/MPS out-of-memory errors, the CPU allocator's failure, Python's MemoryError."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text
    )


def out_of_memory(what: str, device: torch.device, err: BaseException) -> RunError:
    found = _ALLOCATION.search(str(err))
    size = f" (it tried to allocate {found.group(1)})" if found else ""
    return RunError(
        f"out of memory on {device} while {what}{size}; lower trainer.batch_size (raising "
        "trainer.grad_accum keeps the batch), trainer.eval_batch_size or the model's size"
    )


@contextmanager
def doing(what: str | Callable[[], str], device: torch.device) -> Iterator[None]:
    """Turn out-of-memory and disk-full errors raised in the block into one-line errors."""
    try:
        yield
    except LraBenchError:
        raise
    except OSError as err:
        if err.errno in NO_SPACE:
            raise no_space(err.filename or "a file") from None
        raise
    except (RuntimeError, MemoryError) as err:
        if is_out_of_memory(err):
            raise out_of_memory(what() if callable(what) else what, device, err) from None
        raise
