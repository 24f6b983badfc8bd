"""Device and precision, one home: where a run computes and in which number format.

- the device: ``trainer.device`` resolved (``auto``, ``cpu``, ``cuda``, ``cuda:N``; under
  torchrun each rank's own GPU), its name in result rows, batches moved onto it;
- precision: the autocast dtype of ``trainer.amp`` and ``trainer.amp_dtype`` (bf16 where the
  device computes it natively, fp16 with a loss scaler on CUDA, fp32 where fp16 training is not
  available), the autocast context around forward passes;
- determinism: ``trainer.deterministic`` (bit-for-bit repeats on one machine);
- cost: step times and peak memory.

Deterministic mode sets ``CUBLAS_WORKSPACE_CONFIG`` before the first cuBLAS call (cuBLAS
otherwise splits reductions differently from call to call), makes every operation use a
deterministic algorithm (one without raises, rather than warns), turns cuDNN autotuning off and
leaves out scaled-dot-product attention's cuDNN kernel (in strict mode torch runs the flash and
memory-efficient backward passes without atomics; the cuDNN one has no such path). It costs
speed: time tables are made without it.

Peak memory on CUDA comes from torch's allocator statistics. On CPU (Linux) it is the resident
set's high-water mark (``VmHWM`` in ``/proc/self/status``), which writing 5 to
``/proc/self/clear_refs`` resets to the current resident set, so that runs or cases sharing a
process do not inherit an earlier peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import platform
import resource
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

PROC_STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
CUBLAS_WORKSPACE = ":4096:8"

# --- the device ------------------------------------------------------------------------------


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


def run_device(name: str, local_rank: int | None = None) -> torch.device:
    """``trainer.device`` resolved for this process; ConfigError (one line) when it cannot be."""
    from lra_bench.config import check_device
    from lra_bench.errors import ConfigError

    check_device(name)  # before torch parses it: one line for an unknown kind
    try:
        return resolve_device(name, local_rank)
    except (ValueError, RuntimeError) as err:  # torch names an unknown kind in a RuntimeError
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(
            f"invalid setting trainer.device={name}: {reason} (use auto, cpu, cuda or cuda:N)"
        ) from None


def make_current(device: torch.device) -> None:
    """Make ``device`` this process's: an indexed CUDA device the current one (CUDA events and
    NCCL use that one); on a CPU, freed memory held for the next step (``hold_freed_memory``)
    and subnormal numbers flushed to zero (``torch.set_flush_denormal``): an exponential far
    below 1 lands among them, and a product over them runs many times slower (Skyformer's
    fwd+bwd at n = 2048 on inputs of three times unit scale: 191 ms, 37 ms flushed). Values
    below 1.2e-38 in float32 then count as 0. Training and the bench both come through here,
    so that the bench times what training runs."""
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    elif device.type == "cpu":
        hold_freed_memory()
        torch.set_flush_denormal(True)


def device_label(device: torch.device, threads: int | None = None, world: int = 1) -> str:
    """The device as result rows name it: the GPU's name or ``cpu-<threads>t``; ``x<ranks>``
    when several ranks share the run."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu-{threads or torch.get_num_threads()}t"
    )
    return name + (f"x{world}" if world > 1 else "")


def to_device(batch: Mapping[str, torch.Tensor | None], device: torch.device) -> Any:
    """The batch's tensors on ``device`` (copied without waiting where the host memory allows)."""
    return {
        k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in batch.items()
    }


# --- precision -------------------------------------------------------------------------------


def native_bf16(device: torch.device) -> bool:
    """True when ``device`` computes in bf16 natively (CUDA compute capability >= 8, ROCm).

    ``torch.cuda.is_bf16_supported()`` alone also says True where bf16 is only emulated
    (V100, T4), which is slower than fp16 there.
    """
    if device.type != "cuda":
        return True
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch without the argument
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8


def fp16_unavailable(amp: bool, dtype: str, device: torch.device) -> bool:
    """True when ``trainer.amp_dtype=fp16`` is asked of a device without fp16 training (not CUDA):
    the run then trains in fp32."""
    return amp and dtype == "fp16" and device.type != "cuda"


def precision_of(
    amp: bool, device: torch.device, dtype: str = "auto"
) -> tuple[str, torch.dtype | None]:
    """(name for result rows, autocast dtype or None) of ``trainer.amp`` and ``trainer.amp_dtype``.

    ``auto``: bf16 where supported, else fp16 with a scaler; ``fp16``: fp16 with a scaler on a
    CUDA device and fp32 elsewhere (``fp32_fallback`` says so); ``bf16``: bf16.
    """
    if not amp or fp16_unavailable(amp, dtype, device):
        return "fp32", None
    if dtype == "fp16" or (dtype == "auto" and not native_bf16(device)):  # V100, T4: emulated
        return "fp16-amp", torch.float16
    return "bf16-amp", torch.bfloat16


def fp32_fallback(trainer_cfg: Any, device: torch.device) -> str | None:
    """The line a run prints when ``trainer.amp_dtype=fp16`` meets a device without fp16
    training."""
    if fp16_unavailable(trainer_cfg.amp, trainer_cfg.amp_dtype, device):
        return (
            f"trainer.amp_dtype=fp16: fp16 training needs a CUDA device; this run on "
            f"{device.type} trains in fp32"
        )
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """Mixed precision around a forward pass (nothing when ``dtype`` is None)."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# --- determinism -----------------------------------------------------------------------------


def _sdpa_switches() -> dict[str, tuple[Any, Any]]:
    """The SDPA kernel switches this torch has: name -> (read, write)."""
    b = torch.backends.cuda
    names = {"cudnn": ("cudnn_sdp_enabled", "enable_cudnn_sdp")}
    return {
        k: (getattr(b, r), getattr(b, w))
        for k, (r, w) in names.items()
        if hasattr(b, r) and hasattr(b, w)
    }


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Run the block in deterministic mode when ``enabled``; the previous settings come back
    after."""
    if not enabled:
        yield
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)  # before the first handle
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    switches = _sdpa_switches()
    sdpa = {name: read() for name, (read, _) in switches.items()}
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    for _, write in switches.values():
        write(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        for name, (_, write) in switches.items():
            write(sdpa[name])


# --- cost: step time and peak memory ---------------------------------------------------------


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


def proc_status_kb(key: str) -> int:
    """A ``kB`` entry of ``/proc/self/status`` (``VmHWM``, ``VmRSS``, ``VmSize``); KeyError if
    absent."""
    for line in PROC_STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_resident_peak() -> bool:
    """Reset the resident-set high-water mark to the current resident set; False where it
    cannot be."""
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
    """CUDA: max allocated by torch; CPU: the process's peak resident set since
    ``reset_peak_memory``."""
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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
HELD_BELOW = 32 << 20  # glibc's largest mmap threshold: blocks below it come from the heap
HELD_UP_TO = 1 << 30  # free heap memory kept by the process before any is handed back


def hold_freed_memory() -> bool:
    """Keep freed CPU memory in the process (glibc): blocks below 32 MB come from the heap and up
    to 1 GB of freed heap stays mapped. torch's CPU allocator caches nothing, and glibc maps and
    unmaps each large tensor afresh, so every step page-faulted its fresh tensors in again
    (Skyformer's fwd+bwd at n = 4096 ran about 10% faster held, SDPA's about 3%). The resident
    set then stays near the step's peak. False where this is not glibc."""
    libc = _libc()
    if platform.system() != "Linux" or libc is None or not hasattr(libc, "mallopt"):
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, HELD_BELOW)) and bool(
        libc.mallopt(M_TRIM_THRESHOLD, HELD_UP_TO)
    )


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
