"""One training step and one evaluation pass, shared by the training loop and the bench.

``TrainState`` holds what a step changes (model, optimiser, schedule, loss scaler) and how it
steps (device, mixed precision, clipping); ``train_step`` is the one place that runs forward,
loss, scaled backward over micro-batches, clipping and the optimiser, scaler and schedule steps.
``StepMeter`` sums steps' losses and counts on the device and reads them only when asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from lra_bench.data.batches import Batch
from lra_bench.distributed import DistInfo, all_sum, wrap_model
from lra_bench.optim import make_optimizer
from lra_bench.runtime import autocast, fp32_fallback, precision_of, to_device


@dataclass
class TrainState:
    """What a training step changes and how it steps.

    ``module`` is the model itself (what checkpoints hold); ``model`` is what runs forward:
    ``module`` or, under torchrun, its DistributedDataParallel wrapper, compiled by
    ``torch.compile`` when ``trainer.compile`` is set.
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


def make_train_state(
    module: torch.nn.Module, trainer_cfg: Any, device: torch.device, info: DistInfo | None = None
) -> TrainState:
    """The state of a fresh run: ``module`` (already on ``device``), wrapped for DDP under
    torchrun and compiled when asked, with the optimiser and schedule of ``make_optimizer`` and a
    loss scaler (fp16 only)."""
    info = info or DistInfo()
    model = wrap_model(module, info, device)
    if trainer_cfg.compile:
        model = torch.compile(model, backend=trainer_cfg.compile_backend)  # type: ignore[assignment]
    optimizer, scheduler = make_optimizer(module, trainer_cfg)
    _, amp_dtype = precision_of(trainer_cfg.amp, device, trainer_cfg.amp_dtype)
    fallback = fp32_fallback(trainer_cfg, device)
    if fallback and info.is_main:
        print(fallback, flush=True)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return TrainState(
        module, model, optimizer, scheduler, scaler, device, amp_dtype, trainer_cfg.clip_value, info
    )


@dataclass
class StepStats:
    """One step's loss (mean over micro-batches, this rank) and correct count, left on the device
    (reading them would wait for the device), and this rank's seen examples and real tokens."""

    loss: torch.Tensor
    correct: torch.Tensor
    seen: int
    tokens: int  # real (unpadded) token positions, both documents of a retrieval pair


class NonFiniteLoss(ArithmeticError):
    """The loss of a step was NaN or infinite."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"loss became {loss} at step {step}")
        self.loss, self.step = loss, step


def token_counts(batch: Batch) -> tuple[int, int]:
    """(real, padded) token positions of a host batch, both documents of a retrieval pair."""
    real = padded = 0
    for ids_key, mask_key in (
        ("input_ids", "mask"),
        ("input_ids_1", "mask_1"),
        ("input_ids_2", "mask_2"),
    ):
        ids, mask = batch.get(ids_key), batch.get(mask_key)
        if ids is not None:
            padded += ids.numel()
            real += ids.numel() if mask is None else int(mask.sum())
    return real, padded


def train_step(state: TrainState, batches: Iterator[Batch], micro_batches: int = 1) -> StepStats:
    """Forward, loss and scaled backward over ``micro_batches`` batches from ``batches``, then
    clip (by value), step the optimiser, scaler and schedule.

    Nothing here waits for the device: loss and correct counts stay device tensors (see
    ``StepMeter``), so a non-finite loss is found when they are read, after the step.
    """
    info, device = state.info, state.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = tokens = 0
    for micro in range(micro_batches):
        host_batch = next(batches)
        tokens += token_counts(host_batch)[0]  # masks are still on the host: no device wait
        batch = to_device(host_batch, device)
        sync = micro == micro_batches - 1 or not info.enabled
        with nullcontext() if sync else state.model.no_sync():  # type: ignore[operator]
            with autocast(device, state.amp_dtype):  # forward and loss only, as torch advises:
                logits = state.model(batch)  # backward under autocast recomputes in its dtypes
                loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
            state.scaler.scale(loss / micro_batches).backward()
        loss_sum += loss.detach() / micro_batches
        correct += (logits.detach().argmax(-1) == batch["label"]).sum()
        seen += batch["label"].numel()
    if state.clip_value is not None:
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_value_(state.module.parameters(), state.clip_value)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    return StepStats(loss_sum, correct, seen, tokens)


@dataclass
class MeterReading:
    """Means since the last reading over all ranks: loss, accuracy; real tokens summed."""

    loss: float
    acc: float
    tokens: int
    steps: int


class StepMeter:
    """Sums of the steps since the last reading, kept on the device; ``read`` waits for the
    device once (at logging, evaluation and checkpoint steps, not every step).

    It also keeps the first step whose loss was not finite, so that ``read`` can stop the run
    naming that step even though later steps ran before the reading.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.sums = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss, correct
        self.bad = torch.zeros(
            2, dtype=torch.float64, device=self.device
        )  # first non-finite step, its loss
        self.seen = self.tokens = self.steps = 0

    def add(self, stats: StepStats, step: int) -> None:
        """Count ``stats`` of training step ``step`` (no device wait)."""
        loss = stats.loss.detach().double()
        self.sums += torch.stack(
            [torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0), stats.correct.double()]
        )
        first = (self.bad[0] == 0) & ~torch.isfinite(loss)
        self.bad = torch.where(
            first, torch.stack([torch.full_like(loss, float(step)), loss]), self.bad
        )  # a fill, no copy
        self.seen, self.tokens, self.steps = (
            self.seen + stats.seen,
            self.tokens + stats.tokens,
            self.steps + 1,
        )

    def read(self, info: DistInfo) -> MeterReading:
        """The means since the last reading (then start afresh); NonFiniteLoss when a loss was not
        finite."""
        if self.steps == 0:
            return MeterReading(float("nan"), float("nan"), 0, 0)
        bad_step, bad_loss = self.bad.tolist()
        loss, correct, seen, tokens, bad_ranks = all_sum(
            [*self.sums.tolist(), self.seen, self.tokens, float(bad_step > 0)], info, self.device
        )
        steps = self.steps
        self.reset()
        if bad_step > 0:
            raise NonFiniteLoss(bad_loss, int(bad_step))
        if bad_ranks > 0:
            raise NonFiniteLoss(float("nan"), 0)  # another rank's (0: the step is named there)
        return MeterReading(
            loss / (steps * info.world_size), correct / max(seen, 1), int(tokens), steps
        )


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Any,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    info: DistInfo,
) -> float:
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
