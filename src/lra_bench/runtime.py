"""Where code runs and what it costs: device choice, the device's name for result rows, peak memory.

Peak memory on CUDA comes from torch's allocator statistics. On CPU (Linux) it is the resident
set's high-water mark (``VmHWM`` in ``/proc/self/status``), which writing 5 to
``/proc/self/clear_refs`` resets to the current resident set, so that runs or cases sharing a
process do not inherit an earlier peak. ``tensor_peak_mb`` gives the allocator-independent figure
(the most tensor memory alive at once) on both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Under torchrun (``local_rank`` given) a CUDA choice becomes this rank's own GPU. Raises
    ValueError when CUDA is asked for and there is none.
    """
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("no CUDA device is available")
    if device.type == "cuda" and local_rank is not None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def device_label(device: torch.device, threads: int | None = None, world: int = 1) -> str:
    """The device as result rows name it: the GPU's name or ``cpu-<threads>t``, ``x<ranks>`` when several."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu-{threads or torch.get_num_threads()}t"
    )
    return name + (f"x{world}" if world > 1 else "")


class StepTimer:
    """Wall time of each step, read lazily: on CUDA from events recorded around the step on the
    device's stream (no synchronize per step; ``flush`` waits for the last one), elsewhere from
    ``perf_counter``."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pending: list[Any] = []
        self._start: Any = None

    def start(self) -> None:
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.pending.append((self._start, end))
        else:
            self.pending.append(time.perf_counter() - self._start)

    def flush(self) -> list[float]:
        """Seconds of each step stopped since the last flush, in order."""
        pending, self.pending = self.pending, []
        if not self.cuda or not pending:
            return pending
        pending[-1][1].synchronize()
        return [start.elapsed_time(end) / 1000 for start, end in pending]


# --- peak memory -----------------------------------------------------------------------------


def proc_status_kb(key: str) -> int:
    """A ``kB`` entry of ``/proc/self/status`` (``VmHWM``, ``VmRSS``, ``VmSize``); KeyError if absent."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_resident_peak() -> bool:
    """Reset the resident-set high-water mark to the current resident set; False where it cannot be."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def cpu_peak_supported() -> bool:
    """True where the resident high-water mark can be reset and read (Linux /proc)."""
    if not reset_resident_peak():
        return False
    try:
        proc_status_kb("VmHWM")
    except (OSError, KeyError):
        return False
    return True


def reset_peak_memory(device: torch.device) -> None:
    """Start a peak-memory count afresh (several runs may share a process in a sweep)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_resident_peak()  # elsewhere the process-lifetime peak is what can be had


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated by torch; CPU: the process's peak resident set since ``reset_peak_memory``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        return proc_status_kb("VmHWM") / 2**10
    except (OSError, KeyError):
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if platform.system() == "Darwin" else kb / 2**10


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None


class PeakMemory:
    """``start()`` before an operation, ``peak_mb()`` after it: the *extra* memory it needed.

    CUDA: the allocator's peak minus what was allocated at ``start``. CPU (Linux): freed heap
    pages are first handed back (``malloc_trim(0)``, so that memory released earlier cannot hide
    new allocations), the high-water mark is reset, and the peak is ``VmHWM`` minus ``VmRSS`` at
    ``start``. Elsewhere the CPU peak is missing (NaN).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.base = 0
        self.cpu_ok = device.type == "cpu" and cpu_peak_supported()
        self.libc = _libc() if self.cpu_ok else None

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.cpu_ok:
            if self.libc is not None and hasattr(self.libc, "malloc_trim"):
                self.libc.malloc_trim(0)
            reset_resident_peak()
            self.base = proc_status_kb("VmRSS") * 1024

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        if self.cpu_ok:
            return max(proc_status_kb("VmHWM") * 1024 - self.base, 0) / 2**20
        return math.nan


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
