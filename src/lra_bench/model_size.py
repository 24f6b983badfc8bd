"""A model too large for its device is refused from the config alone, before it is built.

``parameter_count`` restates the shared encoder's layout (``lra_bench.model``) arithmetically:
embeddings, per block the fused query/key/value and output projections, two LayerNorms and
the feed-forward pair, the final LayerNorm and the classifier head. Parameters an attention
variant adds of its own are left out, so the count is a lower bound. Training holds each
parameter four times in fp32 (weight, gradient, Adam's two moments): ``TRAINING_BYTES``.

The memory compared with is the GPU's total memory for a CUDA device (asking for the free
memory would open a CUDA context, here possibly on another rank's GPU) and the memory the
system reports available (``MemAvailable``) for the CPU, where an overrun ends in the kernel's
out-of-memory kill, which prints nothing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

TRAINING_BYTES = 16  # fp32 weight + gradient + Adam's exp_avg and exp_avg_sq
MEMINFO = Path("/proc/meminfo")
ALWAYS_FITS = 1 << 30  # below this many bytes no device is asked (every supported one has more)


def parameter_count(model: Any, task: Any) -> int:
    """Parameters of the shared model for these ``model``
    and ``task`` settings (no attention extras)."""
    dim, ffn, qkv = model.dim, model.ffn_dim, model.qkv_dim or model.dim
    attn_bias = 3 * qkv + dim if model.attn_bias else 0
    block = dim * 3 * qkv + qkv * dim + attn_bias + 2 * dim * ffn + ffn + dim + 4 * dim
    positions = (task.max_len + (model.pooling == "cls")) * dim
    encoder = (
        task.vocab_size * dim
        + (positions if model.positions == "learned" else 0)
        + (dim if model.pooling == "cls" else 0)
        + model.num_layers * block
        + 2 * dim
    )
    return encoder + _head_count(model, task)


def _head_count(model: Any, task: Any) -> int:
    """Parameters of the classifier head (single sequence, or retrieval's nli or lra head)."""
    dim, hidden, classes = model.dim, model.classifier_dim, task.num_classes
    if not task.dual:
        return dim * hidden + hidden + hidden * classes + classes
    if model.dual_head == "lra":
        half = hidden // 2
        return 2 * dim * hidden + hidden + hidden * half + half + half * classes + classes
    return 4 * dim * hidden + hidden + hidden * classes + classes


def device_memory(device_name: str) -> tuple[int, str] | None:
    """(bytes, description) of the memory a run on ``device_name`` can use; None when unknown."""
    import torch

    if device_name != "cpu" and torch.cuda.is_available():
        index = (
            int(device_name.split(":")[1])
            if ":" in device_name
            else int(os.environ.get("LOCAL_RANK", "0"))
        )
        if index < torch.cuda.device_count():
            total = torch.cuda.get_device_properties(index).total_memory
            return total, f"the {total / 2**30:.1f} GiB of cuda:{index}"
        return None
    available = _available_ram()
    return (
        None
        if available is None
        else (available, f"the {available / 2**30:.1f} GiB of RAM available")
    )


def _available_ram() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), else the physical memory, else None."""
    try:
        match = re.search(r"^MemAvailable:\s+(\d+) kB", MEMINFO.read_text(), re.MULTILINE)
        if match:
            return int(match.group(1)) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def too_large(model: Any, task: Any, device_name: str) -> str | None:
    """Why the model cannot train on the device (one line), or None when it may fit."""
    count = parameter_count(model, task)
    needed = count * TRAINING_BYTES
    if needed <= ALWAYS_FITS:
        return None
    memory = device_memory(device_name)
    if memory is None or needed <= memory[0]:
        return None
    return (
        f"the model has at least {count:,} parameters; training them needs at least "
        f"{needed / 2**30:,.1f} GiB (weights, gradients and Adam moments in fp32), more than "
        f"{memory[1]}: lower model.dim, model.ffn_dim or model.num_layers"
    )
