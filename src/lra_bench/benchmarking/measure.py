"""Timing and peak memory of one bench case, run where the case runs (a worker or in-process).

Time: the median (and the minimum, steadier on a busy machine) of timed runs after warm-up runs;
CUDA events on GPU, ``perf_counter`` on CPU.

Peak memory is the *extra* memory an operation needs beyond what is allocated when it starts
(its inputs, the module and, for a training step, the parameters and optimiser state):

- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``, minus
  ``memory_allocated`` at the reset.
- CPU (Linux): the resident set's high-water mark, reset to the current resident set after
  freed heap pages are handed back; the peak is ``VmHWM - VmRSS`` at the reset (see
  ``runtime.PeakMemory``). A 100 MB tensor measures as 100 MB. Elsewhere the CPU peak is
  reported as missing (NaN).

Saved for backward: the bytes of the distinct storages autograd keeps from one forward (counted
with ``torch.autograd.graph.saved_tensors_hooks``; inputs and parameters it keeps included). Unlike
a peak, it is deterministic: the same on any machine and under any load.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf

from lra_bench.benchmarking.config import DTYPE_NAMES
from lra_bench.benchmarking.profiling import profile_run
from lra_bench.runtime import (
    PeakMemory,
    autocast,
    cpu_peak_supported,
    make_current,
    proc_status_kb,
    reset_resident_peak,
    resolve_device,
)

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # attention mode's `dtype`


class CaseTimeout(RuntimeError):
    """The case ran past its time limit."""


@dataclass(frozen=True)
class AttentionCase:
    """Forward and forward+backward of one attention module on random q, k, v (laid out as the
    model's, ``model_layout_inputs``)."""

    label: str
    attn: dict[str, Any]
    n: int
    batch: int
    heads: int
    head_dim: int
    device: str
    dtype: str = "float32"
    warmup: int = 1
    repeats: int = 3
    time_limit_s: float = 60.0
    seed: int = 0
    mem_limit_mb: float | None = None  # worker only: cap on the case's extra address space


@dataclass(frozen=True)
class TrainStepCase:
    """One whole training step (``step.train_step``: forward, backward, clip, AdamW and schedule)
    of the task model on random tokens, with the training loop's settings ``trainer``."""

    label: str
    attn: dict[str, Any]
    task: dict[str, Any]
    model: dict[str, Any]
    trainer: dict[str, Any]
    n: int
    batch: int
    device: str
    warmup: int = 1
    repeats: int = 3
    time_limit_s: float = 60.0
    seed: int = 0
    mem_limit_mb: float | None = None


Case = AttentionCase | TrainStepCase


def saved_for_backward_mb(forward: Callable[[], Any]) -> float:
    """MB of the distinct storages autograd saves during one ``forward()`` (each storage counted
    once)."""
    return saved_bytes_mb(forward)[0]


def saved_bytes_mb(
    forward: Callable[[], Any], inputs: Sequence[torch.Tensor] = ()
) -> tuple[float, float]:
    """MB of the distinct storages autograd saves during one ``forward()``, and the same without
    the storages of ``inputs`` and of the tensor ``forward`` returns (the attention's own)."""
    sizes: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        sizes[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    shared = {t.untyped_storage().data_ptr() for t in inputs}
    if isinstance(out, torch.Tensor):
        shared.add(out.untyped_storage().data_ptr())
    del out
    own = sum(size for ptr, size in sizes.items() if ptr not in shared)
    return sum(sizes.values()) / 2**20, own / 2**20


# --- time --------------------------------------------------------------------------------------


def time_ms(fn: Callable[[], None], device: torch.device) -> float:
    """Milliseconds of one call of ``fn``."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))
    t0 = time.perf_counter()
    fn()
    return 1000 * (time.perf_counter() - t0)


def _use(device_name: str) -> torch.device:
    device = resolve_device(device_name)
    make_current(device)  # CUDA events are recorded on the current device
    return device


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise CaseTimeout("ran past the case's time limit")


TENSOR_RUN_SHARE = 2.5  # a profiled run and a timed one, in plain runs

# operators whose presence in the profiled run names the attention kernel that ran
KERNEL_EVENTS = {
    "aten::_scaled_dot_product_attention_math": "sdpa-math",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "sdpa-flash-cpu",
    "aten::_scaled_dot_product_flash_attention": "sdpa-flash",
    "aten::_scaled_dot_product_efficient_attention": "sdpa-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "sdpa-cudnn",
}
FALLBACK_KERNELS = ("sdpa-math",)  # SDPA's materialising fallback (b·h·n² scores at once)


def kernels_seen(ops: set[str]) -> str:
    """The attention kernels a profiled run called (``KERNEL_EVENTS`` and the chunked softmax)."""
    from lra_bench.attention.softmax import CHUNKED_EVENT

    found = {label for name, label in KERNEL_EVENTS.items() if name in ops}
    if CHUNKED_EVENT in ops:
        found.add("softmax-chunked")
    return " ".join(sorted(found))


class ResidentHigh:
    """The resident set's high-water mark over a whole case, across the resets ``PeakMemory``
    makes: the worker's own peak, NaN where it cannot be read (not Linux)."""

    def __init__(self) -> None:
        self.ok = cpu_peak_supported()
        self.high_kb = 0
        if self.ok:
            reset_resident_peak()

    def note(self) -> None:
        if self.ok:
            self.high_kb = max(self.high_kb, proc_status_kb("VmHWM"))

    def mb(self) -> float:
        self.note()
        return self.high_kb / 1024 if self.ok else math.nan


@dataclass(frozen=True)
class Measured:
    """What ``measure`` found: median and min ms of the timed runs, their count, the peaks and
    the kernels the profiled run called."""

    median_ms: float
    min_ms: float
    peak_mb: float  # resident (CPU) or allocated (GPU) peak of the memory-tracked run
    tensor_mb: float  # the most tensor memory alive at once (NaN when not asked for)
    runs: int
    kernels: str = ""


def measure(
    fn: Callable[[], None],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    stop_by: float,
    deadline: float,
    tensors: bool = False,
    resident: ResidentHigh | None = None,
) -> Measured:
    """Warm-up runs, one run under memory tracking, with ``tensors`` one profiled run (the peak
    tensor memory on a CPU and the kernels called; skipped when it and one timed run would not
    fit before ``deadline``), then the timed runs.

    Timed runs stop early (keeping at least one) when the next would end after ``stop_by``;
    any run ending after ``deadline`` raises CaseTimeout.
    """
    for _ in range(warmup):
        fn()
        _check(deadline)
    if resident is not None:
        resident.note()  # before PeakMemory resets the high-water mark
    memory = PeakMemory(device)
    memory.start()
    began = time.monotonic()
    fn()
    run_s = time.monotonic() - began
    peak = memory.peak_mb()
    _check(deadline)
    tensor_mb, kernels = math.nan, ""
    # the profiled run (slower than a plain one) and one timed run must fit in the time left
    if tensors and time.monotonic() + TENSOR_RUN_SHARE * run_s <= deadline:
        tensor_mb, ops = profile_run(fn, memory=device.type == "cpu")
        tensor_mb = peak if device.type == "cuda" else tensor_mb
        kernels = kernels_seen(ops)
    _check(deadline)
    times: list[float] = []
    for _ in range(repeats):
        if times and time.monotonic() + times[-1] / 1000 > stop_by:
            break
        times.append(time_ms(fn, device))
        _check(deadline)
    return Measured(statistics.median(times), min(times), peak, tensor_mb, len(times), kernels)


# --- cases -------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """A case ready to run: its timed operations by name (``fwd``, ``fwdbwd`` or ``step``) and
    the forward whose saved bytes are counted, with the inputs every variant shares."""

    device: torch.device
    timed: dict[str, Callable[[], None]]
    forward: Callable[[], Any]
    inputs: tuple[torch.Tensor, ...] = ()
    params: int = 0


def prepare_attention(case: AttentionCase) -> Prepared:
    """The module of ``case`` on random q, k, v (``model_layout_inputs``), its forward (no grad)
    and forward+backward."""
    from lra_bench.attention import build_attention

    device, dtype = _use(case.device), DTYPES[case.dtype]
    torch.manual_seed(case.seed)
    module = build_attention(
        case.attn, head_dim=case.head_dim, num_heads=case.heads, max_len=case.n
    )
    module = module.to(device=device, dtype=dtype).train()
    q, k, v = model_layout_inputs(case, device, dtype)
    grad = torch.randn(q.shape, device=device, dtype=dtype)
    wrt = (q, k, v, *(p for p in module.parameters() if p.requires_grad))

    def forward() -> None:
        with torch.no_grad():
            module(q, k, v)

    def forward_backward() -> None:
        torch.autograd.grad(module(q, k, v), wrt, grad, allow_unused=True)

    return Prepared(
        device, {"fwd": forward, "fwdbwd": forward_backward}, lambda: module(q, k, v), (q, k, v)
    )


def model_layout_inputs(
    case: AttentionCase, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q, k, v ``[batch, heads, n, head_dim]`` laid out as the model hands them over: views
    of one projection's output (``model.split_heads``), not contiguous tensors of their own. The
    layout changes what a kernel costs (a norm over these rows took 2-5x as long as over
    contiguous ones at n = 4096), and gradients taken at these views stop there, as training's
    flow on into the projection, without the copy that accumulating them into ``.grad`` of
    differently laid-out leaves would add."""
    from lra_bench.model import split_heads

    shape = (case.batch, case.n, 3 * case.heads * case.head_dim)
    projected = torch.randn(shape, device=device, dtype=dtype, requires_grad=True)
    q, k, v = split_heads(projected, case.heads)
    return q, k, v


def attention_case(case: AttentionCase) -> dict[str, Any]:
    """Median and min of fwd (no grad) and fwdbwd ms, fwd_mem_mb, peak_mem_mb (forward+backward),
    saved_mb and tensor_mem_mb with the attention's own parts of both, the worker's resident
    peak, the kernels called and the runs timed."""
    start = time.monotonic()
    deadline = start + case.time_limit_s
    resident = ResidentHigh()
    ready = prepare_attention(case)
    saved, own_saved = saved_bytes_mb(ready.forward, ready.inputs)
    # the forward phase may use a quarter of the time limit; forward+backward the rest
    common = {"warmup": case.warmup, "repeats": case.repeats, "deadline": deadline}
    fwd = measure(ready.timed["fwd"], ready.device, stop_by=start + case.time_limit_s / 4, **common)
    both = measure(
        ready.timed["fwdbwd"],
        ready.device,
        stop_by=deadline,
        tensors=True,
        resident=resident,
        **common,
    )
    # the output and the three input gradients: the same for every variant
    shared_mb = 4 * ready.inputs[0].nelement() * ready.inputs[0].element_size() / 2**20
    return {
        "fwd_ms": fwd.median_ms,
        "fwdbwd_ms": both.median_ms,
        "fwd_min_ms": fwd.min_ms,
        "fwdbwd_min_ms": both.min_ms,
        "fwd_mem_mb": fwd.peak_mb,
        "peak_mem_mb": both.peak_mb,
        "saved_mb": saved,
        "own_saved_mb": own_saved,
        "tensor_mem_mb": both.tensor_mb,
        "own_tensor_mb": max(both.tensor_mb - shared_mb, 0.0),
        "worker_rss_mb": resident.mb(),
        "kernels": both.kernels,
        "repeats": both.runs,
    }


def random_batch(
    task: dict[str, Any], batch: int, n: int, device: torch.device, seed: int
) -> dict[str, torch.Tensor | None]:
    """Random token ids of full length (no padding) and random labels, shaped like the task's
    batches."""
    g = torch.Generator().manual_seed(seed)

    def ids() -> torch.Tensor:
        return torch.randint(1, task["vocab_size"], (batch, n), generator=g).to(device)

    out: dict[str, torch.Tensor | None] = {
        "label": torch.randint(0, task["num_classes"], (batch,), generator=g).to(device)
    }
    if task.get("dual"):
        out.update(input_ids_1=ids(), mask_1=None, input_ids_2=ids(), mask_2=None)
    else:
        out.update(input_ids=ids(), mask=None)
    return out


def prepare_train_step(case: TrainStepCase) -> Prepared:
    """The task model with the training loop's state, its training step on random tokens."""
    from lra_bench.config import ModelConfig
    from lra_bench.model import build_model
    from lra_bench.step import make_train_state, train_step

    device = _use(case.device)
    torch.manual_seed(case.seed)
    model_cfg = OmegaConf.merge(OmegaConf.structured(ModelConfig), case.model)
    cfg = OmegaConf.create(
        {"task": {**case.task, "max_len": max(case.task["max_len"], case.n)}, "attn": case.attn}
    )
    cfg.model = model_cfg
    state = make_train_state(
        build_model(cfg).to(device).train(), OmegaConf.create(case.trainer), device
    )
    batch = random_batch(case.task, case.batch, case.n, device, case.seed)
    batches = itertools.repeat(batch)

    def step() -> None:
        train_step(state, batches)

    def forward() -> Any:
        with autocast(device, state.amp_dtype):
            return state.module(batch)

    params = sum(p.numel() for p in state.module.parameters())
    return Prepared(device, {"step": step}, forward, params=params)


def train_step_case(case: TrainStepCase) -> dict[str, Any]:
    """step_ms, steps_per_s, tokens_per_s, peak_mem_mb, saved_mb, the worker's resident peak,
    the attention kernels called and params of one training step."""
    start = time.monotonic()
    deadline = start + case.time_limit_s
    resident = ResidentHigh()
    ready = prepare_train_step(case)
    saved = saved_for_backward_mb(ready.forward)
    timed = measure(
        ready.timed["step"],
        ready.device,
        warmup=max(case.warmup, 1),
        repeats=case.repeats,
        stop_by=deadline,
        deadline=deadline,
        tensors=True,
        resident=resident,
    )
    return {
        "step_ms": timed.median_ms,
        "step_min_ms": timed.min_ms,
        "steps_per_s": 1000 / timed.median_ms,
        "tokens_per_s": tokens_per_step(case) * 1000 / timed.median_ms,
        "peak_mem_mb": timed.peak_mb,
        "saved_mb": saved,
        "tensor_mem_mb": timed.tensor_mb,
        "worker_rss_mb": resident.mb(),
        "kernels": timed.kernels,
        "params": ready.params,
        "repeats": timed.runs,
    }


def tokens_per_step(case: TrainStepCase) -> int:
    return case.batch * case.n * (2 if case.task.get("dual") else 1)


def run_case(case: Case) -> dict[str, Any]:
    return attention_case(case) if isinstance(case, AttentionCase) else train_step_case(case)
