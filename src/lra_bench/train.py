"""The shared training loop (DESIGN §6), readable top to bottom.

``run(cfg)`` validates the config, prepares data, builds the model, trains with AdamW +
OneCycleLR, evaluates on the whole dev set every ``eval_every`` steps keeping the best
checkpoint, tests that checkpoint on the whole test set, and records ``results.json`` and one
leaderboard row. Re-running with the same run folder resumes from ``last.pt``.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from lra_bench import checkpoint
from lra_bench.attention import Attention
from lra_bench.config import ConfigError, config_hash, validate
from lra_bench.data import load_splits
from lra_bench.data.batches import Batch, Collator, eval_batches, train_stream
from lra_bench.distributed import DistInfo, all_sum, barrier, init_distributed, shutdown
from lra_bench.errors import RunError
from lra_bench.model import build_model
from lra_bench.results import SCHEMA_VERSION, append_row, run_labels, write_json_atomic
from lra_bench.tracking import make_tracker


@dataclass
class Progress:
    """Everything besides module states that a resumed run needs."""

    step: int = 0
    best_val: float = -1.0
    best_step: int = 0
    train_s: float = 0.0
    step_times: list[float] = field(default_factory=list)


class StopFlag:
    """Turns SIGTERM/SIGINT/SIGUSR1 into a flag the loop checks after each step.

    On leaving, a caught SIGUSR1 is handed on to the handler that was there before (a
    cluster launcher's, e.g. submitit's checkpoint-and-requeue), after ``last.pt`` is written.
    """

    SIGNALS = tuple(s for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None)) if s is not None)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: signals stay with their owner
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        usr1 = getattr(signal, "SIGUSR1", None)
        previous = self._previous.get(usr1) if usr1 is not None else None
        if self.signum == usr1 and callable(previous):
            previous(self.signum, None)


def run_directory(cfg: DictConfig) -> Path:
    """This run's folder: ``paths.run_dir``, else Hydra's output folder, else one derived from the config."""
    if cfg.paths.run_dir:
        return Path(cfg.paths.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.runs_dir) / cfg.task.name / cfg.attn.name / f"seed{cfg.seed}" / config_hash(cfg)


def git_commit() -> str:
    """The commit of the installed source tree, with ``-dirty`` for local changes; ``unknown`` outside git."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hydra_overrides() -> str:
    from hydra.core.hydra_config import HydraConfig

    return " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""


def reset_peak_memory(device: torch.device) -> None:
    """Start this run's peak-memory count afresh (several runs may share a process in a sweep).

    On Linux, writing 5 to /proc/self/clear_refs resets the resident-set high-water mark.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the process-lifetime peak is what can be had


def peak_memory_mb(device: torch.device) -> float:
    """CUDA: max allocated by torch; CPU: the process's peak resident set since ``reset_peak_memory``."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if platform.system() == "Darwin" else kb / 2**10


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: (v.to(device, non_blocking=True) if v is not None else None) for k, v in batch.items()}


def precision_of(cfg: DictConfig, device: torch.device) -> tuple[str, torch.dtype | None]:
    """(name for the leaderboard, autocast dtype or None)."""
    if not cfg.trainer.amp:
        return "fp32", None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16-amp", torch.float16
    return "bf16-amp", torch.bfloat16


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


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else nullcontext()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and record one run; returns the results (``status`` = complete | interrupted).

    Under torchrun every rank calls this; only rank 0 writes files, rows and progress.
    """
    validate(cfg)
    info, device = init_distributed(cfg.trainer.device)
    try:
        return _run(cfg, info, device)
    finally:
        shutdown(info)


def _run(cfg: DictConfig, info: DistInfo, device: torch.device) -> dict[str, Any]:
    tc = cfg.trainer
    if tc.batch_size % (tc.grad_accum * info.world_size):
        raise ConfigError(
            f"invalid setting trainer.batch_size={tc.batch_size}: must be divisible by ranks x trainer.grad_accum "
            f"({info.world_size} x {tc.grad_accum})"
        )
    run_dir = run_directory(cfg)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(info)
    chash = config_hash(cfg)
    results_path, last_path, best_path = run_dir / "results.json", run_dir / "last.pt", run_dir / "best.pt"
    if results_path.exists() and last_path.exists():
        done = checkpoint.load(last_path)
        if done.get("complete") and done.get("config_hash") == chash:
            print(f"run already complete in {run_dir}; results: {results_path}")
            import json

            return json.loads(results_path.read_text())

    if info.is_main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    torch.manual_seed(cfg.seed)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    if tc.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    precision, amp_dtype = precision_of(cfg, device)
    reset_peak_memory(device)

    # --- data ------------------------------------------------------------------------------
    splits = load_splits(cfg)
    collate = Collator(cfg.task.max_len, cfg.data.pad_to, cfg.data.mask_zero, cfg.task.dual)
    micro_batch = tc.batch_size // tc.grad_accum  # global; each rank takes 1/world of it
    eval_bs = tc.eval_batch_size or tc.batch_size
    workers, rank, world = cfg.data.loader_workers, info.rank, info.world_size
    val_loader = eval_batches(splits["val"], collate, eval_bs, workers, rank, world)
    test_loader = eval_batches(splits["test"], collate, eval_bs, workers, rank, world)

    # --- model, optimiser, schedule -------------------------------------------------------------
    raw_model = build_model(cfg).to(device)
    params = sum(p.numel() for p in raw_model.parameters())
    model: torch.nn.Module = raw_model
    if info.enabled:
        unused = any(not m.uses_keys for m in raw_model.modules() if isinstance(m, Attention))  # e.g. shared-QK Reformer
        model = torch.nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=unused
        )
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=tc.lr, betas=tuple(tc.betas), eps=tc.eps, weight_decay=tc.weight_decay)
    # OneCycleLR with its defaults (as the peer code), so beta1 also cycles 0.85..0.95.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=tc.lr, total_steps=tc.steps, pct_start=tc.warmup_steps / tc.steps, anneal_strategy="linear"
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    progress = Progress()

    if last_path.exists():
        state = checkpoint.load(last_path)
        if state.get("config_hash") != chash:
            raise RunError(
                f"{last_path} was written by another configuration (hash {state.get('config_hash')}, now {chash}); "
                "use another run folder (paths.run_dir=...) or delete that checkpoint"
            )
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        progress = Progress(**state["progress"])
        checkpoint.set_rng_state(state["rng"])
        if info.is_main:
            print(f"resuming {run_dir} from step {progress.step}")

    def save_last(complete: bool = False) -> None:
        if not info.is_main:
            return
        checkpoint.save_atomic(
            {
                "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "progress": vars(progress),
                "rng": checkpoint.rng_state(),
                "config_hash": chash,
                "complete": complete,
            },
            last_path,
        )

    run_name = f"{cfg.task.name}-{cfg.attn.name}-s{cfg.seed}-{chash}"
    tracker = make_tracker(cfg, str(run_dir), run_name) if info.is_main else make_tracker(OmegaConf.create({"logger": {"name": "none"}}), "", "")
    try:
        # --- train ----------------------------------------------------------------------------
        stream = train_stream(splits["train"], collate, micro_batch, cfg.seed, progress.step * tc.grad_accum, workers, rank, world)
        model.train()
        if info.is_main:
            print(f"training {cfg.task.name}/{cfg.attn.name} seed {cfg.seed} in {run_dir} from step {progress.step} of {tc.steps}", flush=True)
        bar = tqdm(total=tc.steps, initial=progress.step, disable=not (tc.progress and info.is_main), desc=f"{cfg.task.name}/{cfg.attn.name}", dynamic_ncols=True)
        tokens_per_step = 0
        with StopFlag() as stop:
            while progress.step < tc.steps:
                t0 = time.perf_counter()
                loss_sum, correct, seen = 0.0, 0, 0
                for micro in range(tc.grad_accum):
                    batch = to_device(next(stream), device)
                    sync = micro == tc.grad_accum - 1 or not info.enabled
                    with autocast(device, amp_dtype), (nullcontext() if sync else model.no_sync()):  # type: ignore[operator]
                        logits = model(batch)
                        loss = torch.nn.functional.cross_entropy(logits.float(), batch["label"])
                        scaler.scale(loss / tc.grad_accum).backward()
                    loss_sum += loss.item() / tc.grad_accum
                    correct += int((logits.argmax(-1) == batch["label"]).sum())
                    seen += batch["label"].numel()
                    ids = batch.get("input_ids", batch.get("input_ids_1"))
                    tokens_per_step = ids.numel() * (2 if cfg.task.dual else 1) * tc.grad_accum * world  # type: ignore[union-attr]
                loss_sum = all_sum([loss_sum], info, device)[0] / world
                if not math.isfinite(loss_sum):
                    raise RunError(
                        f"loss became {loss_sum} at step {progress.step + 1}; the last good checkpoint is {last_path} "
                        "(try a lower trainer.lr or trainer.amp=false)"
                    )
                if tc.clip_value is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_value_(raw_model.parameters(), tc.clip_value)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                dt = time.perf_counter() - t0
                progress.step += 1
                progress.train_s += dt
                progress.step_times.append(dt)

                lr = scheduler.get_last_lr()[0]
                bar.update(1)
                if progress.step % tc.log_every == 0 or progress.step == tc.steps:
                    bar.set_postfix(loss=f"{loss_sum:.4f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.2e}")
                    tracker.log({"train/loss": loss_sum, "train/acc": correct / seen, "train/lr": lr}, progress.step)
                if progress.step % tc.eval_every == 0 or progress.step == tc.steps:
                    val_acc = evaluate(raw_model, val_loader, device, amp_dtype, info)
                    tracker.log({"val/acc": val_acc}, progress.step)
                    if info.is_main:
                        bar.write(f"step {progress.step}: val_acc={val_acc:.4f} (best {max(val_acc, progress.best_val):.4f})")
                    if val_acc > progress.best_val:
                        progress.best_val, progress.best_step = val_acc, progress.step
                        if info.is_main:
                            checkpoint.save_atomic({"model": raw_model.state_dict(), "step": progress.step, "config_hash": chash}, best_path)
                if progress.step % tc.ckpt_every == 0:
                    save_last()
                stop_now = all_sum([float(stop.signum is not None)], info, device)[0] > 0  # any rank signalled
                if stop_now or (tc.stop_at_step is not None and progress.step >= tc.stop_at_step):
                    save_last()
                    barrier(info)
                    bar.close()
                    why = signal.Signals(stop.signum).name if stop.signum is not None else "signal" if stop_now else f"trainer.stop_at_step={tc.stop_at_step}"
                    if info.is_main:
                        print(f"stopped at step {progress.step} ({why}); checkpoint {last_path}; re-run the same command to resume")
                    return {"status": "interrupted", "step": progress.step, "signal": stop.signum, "run_dir": str(run_dir)}
        bar.close()

        # --- test the best checkpoint ---------------------------------------------------------------
        barrier(info)
        if best_path.exists():
            raw_model.load_state_dict(checkpoint.load(best_path)["model"])
        test_acc = evaluate(raw_model, test_loader, device, amp_dtype, info)
        step_ms = 1000 * statistics.median(progress.step_times) if progress.step_times else float("nan")
        row = {
            "schema": SCHEMA_VERSION,
            "source": "run",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "task": cfg.task.name,
            "attn": cfg.attn.name,
            "seed": cfg.seed,
            "steps": progress.step,
            "best_step": progress.best_step,
            "val_acc": round(progress.best_val, 6),
            "test_acc": round(test_acc, 6),
            "train_s": round(progress.train_s, 3),
            "step_ms": round(step_ms, 3),
            "tokens_per_s": round(tokens_per_step / (step_ms / 1000), 1) if step_ms > 0 else "",
            "peak_mem_mb": round(peak_memory_mb(device), 1),
            "params": params,
            "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu-{torch.get_num_threads()}t")
            + (f"x{world}" if world > 1 else ""),
            "precision": precision,
            "batch_size": tc.batch_size,
            "max_len": cfg.task.max_len,
            "commit": git_commit(),
            "config_hash": chash,
            "overrides": hydra_overrides(),
            "run_dir": str(run_dir),
            **run_labels(cfg),
        }
        if info.is_main:
            write_json_atomic(results_path, {"status": "complete", **row})
            append_row(cfg.paths.leaderboard, row)
            save_last(complete=True)
        barrier(info)
        tracker.summary({"test/acc": test_acc, "val/best_acc": progress.best_val})
        return {"status": "complete", **row}
    finally:
        tracker.finish()


def main(cfg: DictConfig) -> int:
    """Command-line wrapper around ``run``: one-line errors, the row printed, an exit status."""
    from lra_bench.data import DataError
    from lra_bench.results import ResultsError

    try:
        result = run(cfg)
    except (ConfigError, DataError, RunError, ResultsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if result["status"] != "complete":
        return 130 if result.get("signal") == signal.SIGINT else 0
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(" ".join(f"{k}={result[k]}" for k in ("task", "attn", "seed", "steps", "val_acc", "test_acc", "step_ms", "peak_mem_mb")))
    return 0
