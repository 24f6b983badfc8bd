"""The profiler's view of one operation: the operators it called and its peak tensor memory.

``tensor_peak_mb`` gives the allocator-independent peak (the most tensor memory alive at once)
on CPU and GPU; the bench also reads which attention kernels ran from the operator names.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send the process's file descriptor 2 to the null device while the block runs.

    The profiler's native library prints start/stop lines there (``USDT ... profiler_start``,
    ``STAGE ...``, and ``gpuGetDeviceCount failed`` from CUDA builds on a CPU) that no setting
    turns off; Python errors still propagate as exceptions.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_run(fn: Callable[[], Any], *, memory: bool) -> tuple[float, set[str]]:
    """Run ``fn`` once under the profiler: the most tensor memory alive at once beyond what was
    alive before it (MB; NaN unless ``memory``) and the names of the operators it called."""
    prof = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=memory
    )
    with quiet_native_stderr():
        prof.__enter__()
    try:
        fn()
    finally:
        with quiet_native_stderr():
            prof.__exit__(None, None, None)
    events = list(prof.profiler.kineto_results.events())
    names = {e.name() for e in events if e.name() != "[memory]"}
    if not memory:
        return math.nan, names
    alive = peak = 0
    for event in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        alive += event.nbytes()
        peak = max(peak, alive)
    return peak / 2**20, names


def tensor_peak_mb(fn: Callable[[], Any], device: torch.device, resident_peak_mb: float) -> float:
    """The most tensor memory alive at once during one ``fn()``, beyond what was alive before it.

    This is what ``torch.cuda.max_memory_allocated`` measures on a GPU (where ``resident_peak_mb``,
    from ``PeakMemory``, already is this figure). On a CPU it runs ``fn`` once more under the
    profiler and adds up its allocation and free events in order: unlike the resident set, the
    figure does not depend on how the C allocator caches and fragments freed memory, so it is the
    same from run to run. NaN on other devices.
    """
    if device.type == "cuda":
        return resident_peak_mb
    if device.type != "cpu":
        return math.nan
    return profile_run(fn, memory=True)[0]
