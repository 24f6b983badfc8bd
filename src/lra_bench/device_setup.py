"""Device-wide settings a run makes before its first step: native bf16 check, deterministic kernels.

Deterministic mode (``trainer.deterministic=true``) makes a run repeat bit for bit on the same
machine, GPU included: ``CUBLAS_WORKSPACE_CONFIG`` is set before the first cuBLAS call (cuBLAS
otherwise splits reductions differently from call to call), every operation must use a
deterministic algorithm (one without raises, rather than warns), cuDNN autotuning is off, and
scaled-dot-product attention leaves out its cuDNN kernel (in strict mode torch runs the flash
and memory-efficient backward passes without atomics; the cuDNN one has no such path). It costs
speed: time tables are made without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CUBLAS_WORKSPACE = ":4096:8"


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


def _sdpa_switches() -> dict[str, tuple[object, object]]:
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
    """Run the block in deterministic mode when ``enabled``; the previous settings come back after."""
    if not enabled:
        yield
        return
    os.environ.setdefault(
        "CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE
    )  # before the first cuBLAS handle
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    switches = _sdpa_switches()
    sdpa = {name: read() for name, (read, _) in switches.items()}  # type: ignore[operator]
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    for _, write in switches.values():
        write(False)  # type: ignore[operator]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        for name, (_, write) in switches.items():
            write(sdpa[name])  # type: ignore[operator]
