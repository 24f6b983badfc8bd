"""The shared training loop, in named parts read top to bottom by ``run``.

``run(cfg)`` validates the config, checks the run folder (``run_state.open_folder``: nothing is
written before it passes), prepares data, builds the model with the protocol's optimiser and
schedule (``optim.make_optimizer``), trains (evaluating on the whole dev set every ``eval_every``
steps and keeping the best checkpoint), tests that checkpoint on the whole test set, and records
``results.json`` and one leaderboard row. Re-running with the same run folder resumes exactly
from ``last.pt``; the complete ``last.pt`` holds the last step's weights, ``best.pt`` the best.
"""

from __future__ import annotations

import copy
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from lra_bench import checkpoint
from lra_bench.config import config_hash, validate
from lra_bench.data import load_splits
from lra_bench.data.batches import (
    Collator,
    eval_batches,
    example_lengths,
    loader_workers,
    train_stream,
)
from lra_bench.device_setup import deterministic_mode
from lra_bench.distributed import (
    DistInfo,
    all_sum,
    barrier,
    init_distributed,
    peer_failures,
    seed_dropout_streams,
    shutdown,
)
from lra_bench.errors import DataError, LraBenchError, RunError
from lra_bench.estimate import RunEstimate
from lra_bench.failures import doing
from lra_bench.io import atomic_write_json
from lra_bench.metrics_log import MetricsCsv, Trackers
from lra_bench.model import build_model
from lra_bench.results import (
    SCHEMA_VERSION,
    LeaderboardRow,
    append_row,
    check_appendable,
    new_run_id,
    run_labels,
)
from lra_bench.run_cleanup import forget_unstarted_run
from lra_bench.run_state import Opening, clear_error, open_folder, remove_temporaries, write_error
from lra_bench.runlock import hold_run_folder
from lra_bench.runtime import StepTimer, device_label, peak_memory_mb, reset_peak_memory
from lra_bench.step import (
    NonFiniteLoss,
    StepMeter,
    TrainState,
    evaluate,
    make_train_state,
    precision_of,
    train_step,
)
from lra_bench.tracking import Tracker, make_tracker
from lra_bench.training_rules import drop_partial_batch, keeps_best


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and record one run; returns the results (``status`` = complete | interrupted).

    Under torchrun every rank calls this; only rank 0 writes files, rows and progress.
    """
    # deterministic mode before CUDA starts; a dead or hung peer rank is one line, from rank 0
    with deterministic_mode(cfg.trainer.deterministic), peer_failures(cfg.trainer.dist_timeout_s):
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    info, device = init_distributed(cfg.trainer.device, cfg.trainer.dist_timeout_s)
    try:
        validate(cfg, world_size=info.world_size)  # the batch must split over the ranks too
        folder = RunFolder.of(cfg, info)
        with hold_run_folder(folder.path, info, device):  # one process trains in a folder
            opening = folder.open(cfg)  # checks only: a refusal leaves the folder as it was
            if opening.finished is not None:
                return opening.finished
            try:
                return train_and_record(cfg, folder, opening, device)
            except LraBenchError as err:
                if info.is_main:
                    write_error(folder.path, f"error: {err}")
                raise
    finally:
        shutdown(info)


def train_and_record(
    cfg: DictConfig, folder: RunFolder, opening: Opening, device: torch.device
) -> dict[str, Any]:
    """Everything after the folder's checks: train (or resume), test, record."""
    info = folder.info
    with doing("writing config.yaml", device):
        prepare_process(cfg, folder, device, info)
    with doing("preparing the data", device):
        data = prepare_data(cfg, info, device)
    with doing("building the model", device):
        module = build_model(cfg).to(device)
        state = make_train_state(module, cfg.trainer, device, info)
    seed_dropout_streams(cfg.seed, info)
    progress = resume(folder, state, opening.saved)
    tracker = start_tracker(cfg, folder, info, progress.step)
    try:
        with doing(lambda: f"training (step {progress.step + 1})", device):
            stopped = train(cfg, folder, state, progress, data, tracker)
        if stopped is not None:
            return stopped
        row = opening.recorded  # this run's results, written before a stop: tested already
        if row is None:
            with doing("testing", device):
                test_acc = test_best(folder, state, data.test)
            row = leaderboard_row(cfg, folder, state, progress, test_acc).as_dict()
        row = {key: value for key, value in row.items() if key != "status"}
        record(cfg, folder, state, progress, row)
        tracker.summary({"test/acc": row["test_acc"], "val/best_acc": progress.best_val})
        return {"status": "complete", **row}
    finally:
        tracker.finish()


# --- the run folder and the process ------------------------------------------------------------


def run_directory(cfg: DictConfig) -> Path:
    """This run's folder: ``paths.run_dir``, else Hydra's output folder, else one derived from the config."""
    if cfg.paths.run_dir:
        return Path(cfg.paths.run_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return (
        Path(cfg.paths.runs_dir)
        / cfg.task.name
        / cfg.attn.name
        / f"seed{cfg.seed}"
        / config_hash(cfg)
    )


@dataclass(frozen=True)
class RunFolder:
    """A run's folder, the files in it and the digest of the config they belong to; rank 0 creates it, the others wait."""

    path: Path
    config_digest: str
    info: DistInfo

    @classmethod
    def of(cls, cfg: DictConfig, info: DistInfo) -> RunFolder:
        folder = cls(run_directory(cfg), config_hash(cfg), info)
        if info.is_main:
            folder.path.mkdir(parents=True, exist_ok=True)
        barrier(info)
        return folder

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def open(self, cfg: DictConfig) -> Opening:
        """Check the folder's files and the leaderboard before anything is written (every rank
        reads; a refusal is one line). Then rank 0 removes temporaries left by killed writes."""
        opening = open_folder(self.path, self.config_digest, self.info.is_main)
        if opening.finished is not None:
            if self.info.is_main:
                print(f"run already complete in {self.path}; results: {self.results}")
            return opening
        check_appendable(cfg.paths.leaderboard)
        if self.info.is_main:
            gone = remove_temporaries(self.path)
            if gone:
                print(
                    f"notice: removed {len(gone)} temporary file(s) left by an interrupted write in {self.path}: {', '.join(gone)}",
                    file=sys.stderr,
                )
        return opening


def prepare_process(
    cfg: DictConfig, folder: RunFolder, device: torch.device, info: DistInfo
) -> None:
    """Save the resolved config; set the seed and threads; restart the peak-memory count."""
    if info.is_main:
        OmegaConf.save(cfg, folder.path / "config.yaml", resolve=True)
    torch.manual_seed(cfg.seed)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    reset_peak_memory(device)


# --- data ----------------------------------------------------------------------------------------


@dataclass
class RunData:
    """The training stream's inputs and the dev and test loaders, this rank's share."""

    train: Any  # the training split (a datasets.Dataset)
    collate: Collator
    val: Any
    test: Any
    info: DistInfo
    workers: int = 0
    pin_memory: bool = False
    lengths: Any = None  # training examples' lengths when batches are length-bucketed

    def stream(self, cfg: DictConfig, step: int) -> Any:
        """Micro-batches from training step ``step`` on (a resumed run continues where it stopped)."""
        trainer_cfg = cfg.trainer
        micro_batch = (
            trainer_cfg.batch_size // trainer_cfg.grad_accum
        )  # global; each rank takes 1/world of it
        start = step * trainer_cfg.grad_accum
        return train_stream(
            self.train, self.collate, micro_batch, cfg.seed, start, self.workers, self.info.rank, self.info.world_size,
            lengths=self.lengths, window=cfg.data.bucket_window, pin_memory=self.pin_memory,
        )  # fmt: skip


def prepare_data(cfg: DictConfig, info: DistInfo, device: torch.device) -> RunData:
    """Load (or build) the task's splits; the dev and test loaders cover every example once.

    With ``data.bucket`` batches are padded to their longest member, the training stream is
    length-bucketed and the dev and test sets are read in order of length.
    """
    splits = load_splits(cfg)
    pad_to = "batch" if cfg.data.bucket else cfg.data.pad_to
    collate = Collator(cfg.task.max_len, pad_to, cfg.data.mask_zero, cfg.task.dual)
    eval_bs = cfg.trainer.eval_batch_size or cfg.trainer.batch_size
    workers, pin = loader_workers(cfg.data.loader_workers, device), device.type == "cuda"
    rank, world = info.rank, info.world_size

    def lengths(split: str) -> Any:
        return (
            example_lengths(splits[split], collate.columns, cfg.task.max_len)
            if cfg.data.bucket
            else None
        )

    val = eval_batches(splits["val"], collate, eval_bs, workers, rank, world, lengths("val"), pin)
    splits["test"] = drop_partial_batch(
        splits["test"], cfg.trainer.batch_size, cfg.data.test_drop_last
    )
    test = eval_batches(
        splits["test"], collate, eval_bs, workers, rank, world, lengths("test"), pin
    )
    return RunData(splits["train"], collate, val, test, info, workers, pin, lengths("train"))


# --- resume, checkpoints -------------------------------------------------------------------------


@dataclass
class Progress:
    """Everything besides module states that a resumed run needs."""

    step: int = 0
    best_val: float = -1.0
    best_step: int = 0
    train_s: float = 0.0
    step_times: list[float] = field(default_factory=list)
    tokens: int = 0  # real (unpadded) tokens trained on, all ranks
    run_id: str = ""  # this run's id, in its results and leaderboard row (set when it starts)
    saved_step: int = field(default=0, repr=False, compare=False)  # the step of last.pt (not saved)

    def saved(self) -> dict[str, Any]:
        keys = ("step", "best_val", "best_step", "train_s", "step_times", "tokens", "run_id")
        return {key: getattr(self, key) for key in keys}


def resume(folder: RunFolder, state: TrainState, saved: dict[str, Any] | None) -> Progress:
    """Load the checked checkpoint ``saved`` into ``state`` (and restore the RNG); a fresh
    Progress with a new run id when there is none."""
    if saved is None:
        return Progress(run_id=new_run_id())
    try:
        state.load_state_dict(saved)
        progress = Progress(**saved["progress"], saved_step=saved["progress"]["step"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise RunError(
            f"{folder.last} does not fit this model and optimiser ({str(err).splitlines()[0][:120]}); "
            "use another run folder (paths.run_dir=...)"
        ) from None
    progress.run_id = progress.run_id or new_run_id()  # checkpoints from before run ids
    notice = checkpoint.restore_rng_states(saved["rng"], folder.info, state.device)
    if notice and folder.info.is_main:
        print(notice)
    if folder.info.is_main:
        print(f"resuming {folder.path} from step {progress.step}")
    return progress


def save_last(
    folder: RunFolder, state: TrainState, progress: Progress, complete: bool = False
) -> None:
    """Write ``last.pt`` (rank 0): module, optimiser, schedule, scaler, progress and every rank's RNG states.

    Every rank calls this (the RNG states are gathered), except for ``complete`` (rank 0 alone).
    """
    rng = checkpoint.rank_rng_states(folder.info, state.device, gather=not complete)
    if not folder.info.is_main:
        progress.saved_step = progress.step  # every rank knows what is saved (the same on all)
        return
    payload = {
        **state.state_dict(),
        "progress": progress.saved(),
        "rng": rng,
        "config_hash": folder.config_digest,
        "complete": complete,
    }
    checkpoint.save_atomic(payload, folder.last, keep_previous=True)
    progress.saved_step = progress.step


def start_tracker(cfg: DictConfig, folder: RunFolder, info: DistInfo, step: int) -> Tracker:
    """On rank 0, ``metrics.csv`` (continued from ``step``) and the experiment tracker; a silent
    one on the other ranks."""
    if not info.is_main:
        return make_tracker(OmegaConf.create({"logger": {"name": "none"}}), "", "")
    name = f"{cfg.task.name}-{cfg.attn.name}-s{cfg.seed}-{folder.config_digest}"
    return Trackers(MetricsCsv(folder.path, step), make_tracker(cfg, str(folder.path), name))


# --- the loop ------------------------------------------------------------------------------------


class StopFlag:
    """Turns SIGTERM/SIGINT/SIGUSR1 into a flag the loop checks after each step.

    On leaving, a caught SIGUSR1 is handed on to the handler that was there before (a
    cluster launcher's, e.g. submitit's checkpoint-and-requeue), after ``last.pt`` is written.
    """

    SIGNALS = tuple(
        s
        for s in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGUSR1", None))
        if s is not None
    )

    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self.announce = announce  # say at once that the signal was heard (rank 0)

    def __enter__(self) -> StopFlag:
        try:
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: signals stay with their owner
            pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.announce and self.signum is None:
            name = signal.Signals(signum).name
            print(
                f"stopping after this step… ({name}; last.pt will be written)",
                file=sys.stderr,
                flush=True,
            )
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        usr1 = getattr(signal, "SIGUSR1", None)
        previous = self._previous.get(usr1) if usr1 is not None else None
        if self.signum == usr1 and callable(previous):
            previous(self.signum, None)


def train(
    cfg: DictConfig,
    folder: RunFolder,
    state: TrainState,
    progress: Progress,
    data: RunData,
    tracker: Tracker,
) -> dict[str, Any] | None:
    """Step until ``trainer.steps``; returns the ``interrupted`` result when a signal or
    ``trainer.stop_at_step`` stops it first (after writing ``last.pt``), else None."""
    trainer_cfg, info = cfg.trainer, state.info
    stream = data.stream(cfg, progress.step)
    state.model.train()
    if info.is_main:
        print(
            f"training {cfg.task.name}/{cfg.attn.name} seed {cfg.seed} on {device_label(state.device, world=info.world_size)} in {folder.path} from step {progress.step} of {trainer_cfg.steps}",
            flush=True,
        )
    bar = tqdm(
        total=trainer_cfg.steps,
        initial=progress.step,
        disable=not (trainer_cfg.progress and info.is_main),
        desc=f"{cfg.task.name}/{cfg.attn.name}",
        dynamic_ncols=True,
    )
    meter, timer = StepMeter(state.device), StepTimer(state.device)
    estimate = run_estimate(trainer_cfg, progress.step, state, bar.write)
    with StopFlag(announce=info.is_main) as stop:
        while progress.step < trainer_cfg.steps:
            timer.start()
            stats = train_step(state, stream, trainer_cfg.grad_accum)
            timer.stop()
            progress.step += 1
            meter.add(stats, progress.step)
            bar.update(1)
            estimate.tick(progress.step)
            why = stop_reason(stop, trainer_cfg, progress, state)
            if why is not None or reading_due(trainer_cfg, progress.step):
                take_reading(folder, state, progress, meter, timer, bar, tracker)
                maybe_evaluate(cfg, folder, state, progress, data.val, bar, tracker)
                if progress.step % trainer_cfg.ckpt_every == 0:
                    save_last(folder, state, progress)
            if why is not None:
                if progress.saved_step != progress.step:
                    save_last(folder, state, progress)
                barrier(info)
                bar.close()
                if info.is_main:
                    print(
                        f"stopped at step {progress.step} ({why}); checkpoint {folder.last}; re-run the same command to resume"
                    )
                return {
                    "status": "interrupted",
                    "step": progress.step,
                    "signal": stop.signum,
                    "run_dir": str(folder.path),
                }
    bar.close()
    if progress.saved_step != progress.step:  # the last step's state, kept before testing
        save_last(folder, state, progress)
    return None


def run_estimate(trainer_cfg: DictConfig, step: int, state: TrainState, say: Any) -> RunEstimate:
    """The time estimates of the rest of the run (rank 0 says them)."""
    device = device_label(state.device, world=state.info.world_size)
    say = say if state.info.is_main else lambda _: None
    return RunEstimate(step, trainer_cfg.steps, trainer_cfg.eval_every, device, say)


def reading_due(trainer_cfg: DictConfig, step: int) -> bool:
    """Steps at which the loop waits for the device: logging, evaluation, checkpoint and the last step."""
    return step == trainer_cfg.steps or any(
        step % every == 0
        for every in (trainer_cfg.log_every, trainer_cfg.eval_every, trainer_cfg.ckpt_every)
    )


def take_reading(
    folder: RunFolder,
    state: TrainState,
    progress: Progress,
    meter: StepMeter,
    timer: StepTimer,
    bar: Any,
    tracker: Tracker,
) -> None:
    """Wait for the device once: the step times since the last reading into ``progress``, then the
    steps' mean loss and accuracy to the bar and tracker. A non-finite loss stops the run here,
    before any checkpoint is written, so ``last.pt`` always predates it."""
    times = timer.flush()
    progress.step_times.extend(times)
    progress.train_s += sum(times)
    try:
        reading = meter.read(state.info)
    except NonFiniteLoss as err:
        where = f"at step {err.step}" if err.step else f"on another rank by step {progress.step}"
        good = (
            f"{folder.last} (step {progress.saved_step})"
            if progress.saved_step
            else "none (no checkpoint was written before it)"
        )
        raise RunError(
            f"loss became {err.loss} {where}; the last good checkpoint is {good} (try a lower trainer.lr or trainer.amp=false)"
        ) from None
    progress.tokens += reading.tokens
    lr = state.scheduler.get_last_lr()[0]
    bar.set_postfix(loss=f"{reading.loss:.4f}", acc=f"{reading.acc:.3f}", lr=f"{lr:.2e}")
    speed = reading.tokens / sum(times) if sum(times) > 0 else float("nan")
    tracker.log(
        {"train/loss": reading.loss, "train/acc": reading.acc, "train/lr": lr}
        | {"train/tokens_per_s": speed, "train/elapsed_s": progress.train_s},
        progress.step,
    )


def maybe_evaluate(
    cfg: DictConfig,
    folder: RunFolder,
    state: TrainState,
    progress: Progress,
    val: Any,
    bar: Any,
    tracker: Tracker,
) -> None:
    """Every ``eval_every`` steps (and the last): dev accuracy; a new best is saved to ``best.pt``
    (from evaluations after ``trainer.best_after`` of the steps, ``training_rules.keeps_best``)."""
    if progress.step % cfg.trainer.eval_every and progress.step != cfg.trainer.steps:
        return
    info = state.info
    val_acc = evaluate(state.module, val, state.device, state.amp_dtype, info)
    tracker.log({"val/acc": val_acc}, progress.step)
    if info.is_main:
        bar.write(
            f"step {progress.step}: val_acc={val_acc:.4f} (best {max(val_acc, progress.best_val):.4f})"
        )
    if val_acc > progress.best_val:
        progress.best_val, progress.best_step = val_acc, progress.step
        if info.is_main and keeps_best(cfg.trainer, progress.step):
            checkpoint.save_atomic(
                {
                    "model": state.module.state_dict(),
                    "step": progress.step,
                    "config_hash": folder.config_digest,
                },
                folder.best,
            )


def stop_reason(
    stop: StopFlag, trainer_cfg: DictConfig, progress: Progress, state: TrainState
) -> str | None:
    """Why the run stops after this step (a signal on any rank, or ``trainer.stop_at_step``), else None."""
    signalled = all_sum([float(stop.signum is not None)], state.info, state.device)[0] > 0
    if stop.signum is not None:
        return signal.Signals(stop.signum).name
    if signalled:
        return "signal"  # another rank's
    if trainer_cfg.stop_at_step is not None and progress.step >= trainer_cfg.stop_at_step:
        return f"trainer.stop_at_step={trainer_cfg.stop_at_step}"
    return None


# --- test and record -----------------------------------------------------------------------------


def test_best(folder: RunFolder, state: TrainState, test: Any) -> float:
    """Test accuracy of the best dev checkpoint (of the last weights when none was kept).

    The module gets its last weights back afterwards: the complete ``last.pt`` holds them.
    """
    barrier(state.info)
    if not folder.best.exists():
        return evaluate(state.module, test, state.device, state.amp_dtype, state.info)
    final = copy.deepcopy(state.module.state_dict())
    state.module.load_state_dict(checkpoint.load(folder.best)["model"])
    try:
        return evaluate(state.module, test, state.device, state.amp_dtype, state.info)
    finally:
        state.module.load_state_dict(final)


def leaderboard_row(
    cfg: DictConfig, folder: RunFolder, state: TrainState, progress: Progress, test_acc: float
) -> LeaderboardRow:
    """The run's leaderboard row: accuracies, time, memory and where the numbers came from."""
    step_ms = 1000 * statistics.median(progress.step_times) if progress.step_times else float("nan")
    return LeaderboardRow(
        schema=SCHEMA_VERSION,
        source="run",
        time=time.strftime("%Y-%m-%dT%H:%M:%S"),
        task=cfg.task.name,
        attn=cfg.attn.name,
        seed=cfg.seed,
        steps=progress.step,
        best_step=progress.best_step,
        val_acc=round(progress.best_val, 6),
        test_acc=round(test_acc, 6),
        train_s=round(progress.train_s, 3),
        step_ms=round(step_ms, 3),
        tokens_per_s=round(progress.tokens / progress.train_s, 1) if progress.train_s > 0 else "",
        peak_mem_mb=round(peak_memory_mb(state.device), 1),
        params=sum(p.numel() for p in state.module.parameters()),
        device=device_label(state.device, world=state.info.world_size),
        precision=precision_of(cfg.trainer.amp, state.device, cfg.trainer.amp_dtype)[0],
        compiled=bool(cfg.trainer.compile),
        batch_size=cfg.trainer.batch_size,
        max_len=cfg.task.max_len,
        commit=git_commit(),
        config_hash=folder.config_digest,
        overrides=hydra_overrides(),
        run_dir=str(folder.path),
        **run_labels(cfg),
        run_id=progress.run_id,
    )


def record(
    cfg: DictConfig, folder: RunFolder, state: TrainState, progress: Progress, row: dict[str, Any]
) -> None:
    """Rank 0 writes ``results.json``, appends the row and marks ``last.pt`` complete; all ranks wait.

    Each step may be repeated: a run stopped between them is re-run from its last step, finds
    its ``results.json`` (same run id) and does not test again, and the leaderboard skips a row
    whose run id it holds, so no stop loses or doubles the row.
    """
    if state.info.is_main:
        atomic_write_json(folder.results, {"status": "complete", **row})
        append_row(cfg.paths.leaderboard, row)
        save_last(folder, state, progress, complete=True)
        clear_error(folder.path)
    barrier(state.info)


def git_commit() -> str:
    """The commit of the installed source tree, with ``-dirty`` for local changes; ``unknown`` outside git."""
    src = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hydra_overrides() -> str:
    from hydra.core.hydra_config import HydraConfig

    return " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""


def main(cfg: DictConfig) -> int:
    """Command-line wrapper around ``run``: one-line errors, the row printed, an exit status."""
    try:
        result = run(cfg)
    except LraBenchError as err:
        print(f"error: {err}", file=sys.stderr)
        if isinstance(err, DataError):  # missing data: no folder is left behind
            forget_unstarted_run(cfg)
        return 2
    if result["status"] != "complete":
        return 128 + result["signal"] if result.get("signal") else 0  # SIGTERM 143, SIGINT 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(
            " ".join(
                f"{k}={result[k]}"
                for k in (
                    "task",
                    "attn",
                    "seed",
                    "steps",
                    "val_acc",
                    "test_acc",
                    "step_ms",
                    "peak_mem_mb",
                    "device",
                )
            )
        )
    return 0
