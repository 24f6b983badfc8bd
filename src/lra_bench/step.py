"""One training step and one evaluation pass, shared by the training loop and the bench.

``TrainState`` holds what a step changes (model, optimiser, schedule, loss scaler) and how it
steps (device, mixed precision, clipping); ``train_step`` is the one place that runs forward,
loss, scaled backward over micro-batches, clipping and the optimiser, scaler and schedule steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from lra_bench.data.batches import Batch
from lra_bench.device_setup import native_bf16
from lra_bench.distributed import DistInfo, all_sum, wrap_model
from lra_bench.optim import make_optimizer


def precision_of(amp: bool, device: torch.device) -> tuple[str, torch.dtype | None]:
    """(name for result rows, autocast dtype or None): bf16 where supported, else fp16 with a scaler."""
    if not amp:
        return "fp32", None
    if not native_bf16(device):  # V100, T4: bf16 only emulated, slower than fp16
        return "fp16-amp", torch.float16
    return "bf16-amp", torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """Mixed precision around a forward pass (nothing when ``dtype`` is None)."""
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in batch.items()}


@dataclass
class TrainState:
    """What a training step changes and how it steps.

    ``module`` is the model itself (what checkpoints hold); ``model`` is what runs forward:
    ``module`` or, under torchrun, its DistributedDataParallel wrapper.
    """

    module: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp_dtype: torch.dtype | None = None
    clip_value: float | None = None
    info: DistInfo = field(default_factory=DistInfo)

    def state_dict(self) -> dict[str, Any]:
        """The module, optimiser, schedule and scaler states, as a checkpoint stores them."""
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def make_train_state(module: torch.nn.Module, trainer_cfg: Any, device: torch.device, info: DistInfo | None = None) -> TrainState:
    """The state of a fresh run: ``module`` (already on ``device``), wrapped for DDP under
    torchrun, with the optimiser and schedule of ``make_optimizer`` and a loss scaler (fp16 only)."""
    info = info or DistInfo()
    model = wrap_model(module, info, device)
    optimizer, scheduler = make_optimizer(module, trainer_cfg)
    _, amp_dtype = precision_of(trainer_cfg.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainState(module, model, optimizer, scheduler, scaler, device, amp_dtype, trainer_cfg.clip_value, info)


@dataclass
class StepStats:
    """One step's loss (mean over micro-batches and ranks), this rank's correct/seen counts and tokens."""

    loss: float
    correct: int
    seen: int
    tokens: int  # all ranks' tokens, from the last micro-batch's shape


class NonFiniteLoss(ArithmeticError):
    """The loss of a step was NaN or infinite; the optimiser did not step."""

    def __init__(self, loss: float) -> None:
        super().__init__(f"loss became {loss}")
        self.loss = loss


def _tokens(batch: Batch) -> int:
    """Token positions of one micro-batch (both documents of a retrieval pair)."""
    ids = batch.get("input_ids", batch.get("input_ids_1"))
    assert ids is not None
    return ids.numel() * (2 if "input_ids_1" in batch else 1)


def train_step(state: TrainState, batches: Iterator[Batch], micro_batches: int = 1) -> StepStats:
    """Forward, loss and scaled backward over ``micro_batches`` batches from ``batches``, then
    clip (by value), step the optimiser, scaler and schedule. Raises NonFiniteLoss before stepping."""
    info, device = state.info, state.device
    loss_sum, correct, seen, tokens = 0.0, 0, 0, 0
    for micro in range(micro_batches):
        batch = to_device(next(batches), device)
        sync = micro == micro_batches - 1 or not info.enabled
        with autocast(device, state.amp_dtype), (nullcontext() if sync else state.model.no_sync()):  # type: ignore[operator]
            logits = state.model(batch)
            loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
            state.scaler.scale(loss / micro_batches).backward()
        loss_sum += loss.item() / micro_batches
        correct += int((logits.argmax(-1) == batch["label"]).sum())
        seen += batch["label"].numel()
        tokens = _tokens(batch) * micro_batches * info.world_size
    loss_sum = all_sum([loss_sum], info, device)[0] / info.world_size
    if not math.isfinite(loss_sum):
        raise NonFiniteLoss(loss_sum)
    if state.clip_value is not None:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_value_(state.module.parameters(), state.clip_value)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    return StepStats(loss_sum, correct, seen, tokens)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Any, device: torch.device, amp_dtype: torch.dtype | None, info: DistInfo) -> float:
    """Accuracy over every example of the split (each rank's share, summed; no batch dropped)."""
    model.eval()
    correct = total = 0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            logits = model(batch)
        correct += int((logits.argmax(-1) == batch["label"]).sum())
        total += batch["label"].numel()
    model.train()
    correct, total = all_sum([correct, total], info, device)
    return correct / max(total, 1)
