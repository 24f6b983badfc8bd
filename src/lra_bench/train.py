"""The shared training loop: a ``Run`` whose methods read top to bottom.

``run(cfg)`` validates the config, checks the run folder (``RunFolder.open``: nothing is written
before it passes), then a ``Run`` prepares data, builds the model with the protocol's optimiser
and schedule (``optim.make_optimizer``), trains (``Run.train``; ``Run.due`` decides after each
step what else it does: a reading of loss and time, the dev evaluation that keeps the best
checkpoint, ``last.pt``, a stop), tests the best checkpoint on the whole test set, and records
``results.json`` and one leaderboard row. Re-running with the same run folder resumes exactly
from ``last.pt``; the complete ``last.pt`` holds the last step's weights, ``best.pt`` the best.
"""

from __future__ import annotations

import copy
import os
import signal
import statistics
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
from lra_bench.data.loaders import RunData, prepare_data
from lra_bench.distributed import (
    DistInfo,
    all_sum,
    barrier,
    init_distributed,
    peer_failures,
    seed_dropout_streams,
    shutdown,
)
from lra_bench.errors import DataError, LraBenchError, RunError, error_status
from lra_bench.estimate import RunEstimate
from lra_bench.failures import doing
from lra_bench.io import atomic_write_json
from lra_bench.metrics_log import MetricsCsv, Trackers
from lra_bench.model import build_model
from lra_bench.provenance import git_commit, hydra_overrides
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
from lra_bench.runtime import (
    StepTimer,
    deterministic_mode,
    device_label,
    peak_memory_mb,
    precision_of,
    reset_peak_memory,
)
from lra_bench.step import (
    NonFiniteLoss,
    StepMeter,
    StepStats,
    evaluate,
    make_train_state,
    train_step,
)
from lra_bench.tracking import Tracker, make_tracker
from lra_bench.training_rules import keeps_best

# what `main` prints of a complete run
SUMMARY = "task attn seed steps val_acc test_acc step_ms peak_mem_mb device".split()


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and record one run; the results (``status`` complete or interrupted).

    Under torchrun every rank calls this; only rank 0 writes files, rows and progress.
    """
    # deterministic mode before CUDA starts; a dead or hung peer rank is one line, from rank 0
    with deterministic_mode(cfg.trainer.deterministic), peer_failures(cfg.trainer.dist_timeout_s):
        return _run(cfg)


def _run(cfg: DictConfig) -> dict[str, Any]:
    info, device = init_distributed(cfg.trainer.device, cfg.trainer.dist_timeout_s)
    try:
        validate(cfg, world_size=info.world_size)  # the batch must split over the ranks too
        folder = RunFolder.of(cfg)
        if info.is_main:
            folder.path.mkdir(parents=True, exist_ok=True)
        barrier(info)  # rank 0 creates the folder, the others wait for it
        with hold_run_folder(folder.path, info, device):  # one process trains in a folder
            opening = folder.open(cfg, info.is_main)  # checks only: a refusal changes nothing
            if opening.finished is not None:
                return opening.finished
            try:
                return Run(cfg, folder, opening, info, device).complete()
            except LraBenchError as err:
                if info.is_main:
                    write_error(folder.path, f"error: {err}")
                raise
    finally:
        shutdown(info)


def main(cfg: DictConfig) -> int:
    """Command-line wrapper around ``run``: one-line errors, the row printed, an exit status."""
    try:
        result = run(cfg)
    except LraBenchError as err:
        status = error_status(str(err))
        if isinstance(err, DataError):  # missing data: no folder is left behind
            forget_unstarted_run(cfg)
        return status
    if result["status"] != "complete":
        return 128 + result["signal"] if result.get("signal") else 0  # SIGTERM 143, SIGINT 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 reports
        print(" ".join(f"{key}={result[key]}" for key in SUMMARY))
    return 0


# --- the run folder ------------------------------------------------------------------------------


def run_directory(cfg: DictConfig) -> Path:
    """This run's folder: ``paths.run_dir``, else Hydra's output folder, else one derived from the
    config."""
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
    """A run's folder, the files in it and the digest of the config they belong to."""

    path: Path
    config_digest: str

    @classmethod
    def of(cls, cfg: DictConfig) -> RunFolder:
        return cls(run_directory(cfg), config_hash(cfg))

    @property
    def results(self) -> Path:
        return self.path / "results.json"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    def open(self, cfg: DictConfig, is_main: bool) -> Opening:
        """Check the folder's files and the leaderboard before anything is written (every rank
        reads; a refusal is one line). Then rank 0 removes temporaries left by killed writes."""
        opening = open_folder(self.path, self.config_digest, is_main)
        if opening.finished is not None:
            if is_main:
                print(f"run already complete in {self.path}; results: {self.results}")
            return opening
        check_appendable(cfg.paths.leaderboard)
        gone = remove_temporaries(self.path) if is_main else []
        if gone:
            print(
                f"notice: removed {len(gone)} temporary file(s) left by an interrupted write in "
                f"{self.path}: {', '.join(gone)}",
                file=sys.stderr,
            )
        return opening


# --- what the loop keeps -------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Due:
    """What the loop does after a step (``Run.due``)."""

    reading: bool  # wait for the device: mean loss, accuracy and step times since the last one
    evaluation: bool  # dev accuracy, a new best kept in best.pt
    save: bool  # write last.pt
    stop: str | None  # why the run stops after this step, else None


@dataclass
class Gauges:
    """What the loop measures between readings: the steps' losses and times, the progress bar and
    the estimate of the time left."""

    meter: StepMeter
    timer: StepTimer
    bar: Any  # tqdm
    estimate: RunEstimate

    def add(self, stats: StepStats, step: int) -> None:
        self.meter.add(stats, step)
        self.bar.update(1)
        self.estimate.tick(step)


# --- the run -------------------------------------------------------------------------------------


class Run:
    """One run on this rank: its config, folder, data, train state, progress and tracker.

    Made once the folder has passed its checks (``RunFolder.open``): it writes the config,
    prepares the data, builds the model and resumes from the checked checkpoint; ``complete``
    then trains, tests and records.
    """

    def __init__(
        self,
        cfg: DictConfig,
        folder: RunFolder,
        opening: Opening,
        info: DistInfo,
        device: torch.device,
    ) -> None:
        self.cfg, self.folder, self.info = cfg, folder, info
        self.recorded = opening.recorded  # this run's results, written before a stop
        with doing("writing config.yaml", device):
            self.prepare_process(device)
        with doing("preparing the data", device):
            self.data: RunData = prepare_data(cfg, info, device)
        with doing("building the model", device):
            module = build_model(cfg).to(device)
            self.state = make_train_state(module, cfg.trainer, device, info)
        seed_dropout_streams(cfg.seed, info)
        self.progress = self.resume(opening.saved)
        self.stop = StopFlag(announce=info.is_main)
        self.tracker = self.start_tracker()

    def complete(self) -> dict[str, Any]:
        """Train (or resume), test the best checkpoint and record; the results (``status``
        complete, or interrupted when a stop came first)."""
        device = self.state.device
        try:
            with doing(lambda: f"training (step {self.progress.step + 1})", device):
                stopped = self.train()
            if stopped is not None:
                return stopped
            row = self.recorded  # written before a stop: tested already
            if row is None:
                with doing("testing", device):
                    test_acc = test_best(self)
                row = self.leaderboard_row(test_acc).as_dict()
            row = {key: value for key, value in row.items() if key != "status"}
            self.record(row)
            best = {"test/acc": row["test_acc"], "val/best_acc": self.progress.best_val}
            self.tracker.summary(best)
            return {"status": "complete", **row}
        finally:
            self.tracker.finish()

    # --- start ---------------------------------------------------------------------------------

    def prepare_process(self, device: torch.device) -> None:
        """Save the resolved config; set the seed and threads; restart the peak-memory count."""
        if self.info.is_main:
            OmegaConf.save(self.cfg, self.folder.path / "config.yaml", resolve=True)
        torch.manual_seed(self.cfg.seed)
        if self.cfg.trainer.threads:
            torch.set_num_threads(self.cfg.trainer.threads)
        reset_peak_memory(device)

    def resume(self, saved: dict[str, Any] | None) -> Progress:
        """Load the checked checkpoint ``saved`` into the train state (and restore the RNG); a
        fresh Progress with a new run id when there is none."""
        if saved is None:
            return Progress(run_id=new_run_id())
        try:
            self.state.load_state_dict(saved)
            progress = Progress(**saved["progress"], saved_step=saved["progress"]["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise RunError(
                f"{self.folder.last} does not fit this model and optimiser "
                f"({str(err).splitlines()[0][:120]}); use another run folder (paths.run_dir=...)"
            ) from None
        progress.run_id = progress.run_id or new_run_id()  # checkpoints from before run ids
        notice = checkpoint.restore_rng_states(saved["rng"], self.info, self.state.device)
        if notice and self.info.is_main:
            print(notice)
        if self.info.is_main:
            print(f"resuming {self.folder.path} from step {progress.step}")
        return progress

    def start_tracker(self) -> Tracker:
        """On rank 0, ``metrics.csv`` (continued from the resumed step) and the experiment
        tracker; a silent one on the other ranks."""
        if not self.info.is_main:
            return make_tracker(OmegaConf.create({"logger": {"name": "none"}}), "", "")
        cfg, path = self.cfg, self.folder.path
        name = f"{cfg.task.name}-{cfg.attn.name}-s{cfg.seed}-{self.folder.config_digest}"
        return Trackers(MetricsCsv(path, self.progress.step), make_tracker(cfg, str(path), name))

    # --- the loop ------------------------------------------------------------------------------

    def train(self) -> dict[str, Any] | None:
        """Step until ``trainer.steps``; the ``interrupted`` result when a signal or
        ``trainer.stop_at_step`` stops it first (after writing ``last.pt``), else None."""
        trainer, progress = self.cfg.trainer, self.progress
        stream = self.data.stream(self.cfg, progress.step)
        self.state.model.train()
        gauges = self.start_gauges()
        with self.stop:
            while progress.step < trainer.steps:
                gauges.timer.start()
                stats = train_step(self.state, stream, trainer.grad_accum)
                gauges.timer.stop()
                progress.step += 1
                gauges.add(stats, progress.step)
                due = self.due(progress.step)
                if due.reading:
                    self.take_reading(gauges)
                if due.evaluation:
                    self.evaluate_dev(gauges.bar)
                if due.save:
                    save_last(self)
                if due.stop is not None:
                    return self.stopped(due.stop, gauges.bar)
        gauges.bar.close()
        return None

    def due(self, step: int) -> Due:
        """What the loop does after ``step``: the one place deciding its cadence.

        Dev accuracy every ``eval_every`` steps and at the last step; ``last.pt`` every
        ``ckpt_every`` steps, at the last step (kept before testing) and on a stop; a reading
        (the loop waits for the device) at those steps and every ``log_every``. The run stops on
        a signal to any rank (all ranks stop at the same step) or at ``trainer.stop_at_step``.
        """
        trainer = self.cfg.trainer
        signalled = all_sum([float(self.stop.signum is not None)], self.info, self.state.device)
        if self.stop.signum is not None:
            stop: str | None = signal.Signals(self.stop.signum).name
        elif signalled[0] > 0:
            stop = "signal"  # another rank's
        elif trainer.stop_at_step is not None and step >= trainer.stop_at_step:
            stop = f"trainer.stop_at_step={trainer.stop_at_step}"
        else:
            stop = None
        last = step == trainer.steps
        evaluation = step % trainer.eval_every == 0 or last
        save = step % trainer.ckpt_every == 0 or last or stop is not None
        reading = evaluation or save or step % trainer.log_every == 0
        return Due(reading, evaluation, save, stop)

    def start_gauges(self) -> Gauges:
        """Say what trains where; the bar, step meter, timer and time estimate from this step."""
        cfg, info, step, device = self.cfg, self.info, self.progress.step, self.state.device
        where = device_label(device, world=info.world_size)
        if info.is_main:
            print(
                f"training {cfg.task.name}/{cfg.attn.name} seed {cfg.seed} on {where} in "
                f"{self.folder.path} from step {step} of {cfg.trainer.steps}",
                flush=True,
            )
        bar = tqdm(
            total=cfg.trainer.steps,
            initial=step,
            disable=not (cfg.trainer.progress and info.is_main),
            desc=f"{cfg.task.name}/{cfg.attn.name}",
            dynamic_ncols=True,
        )
        say = bar.write if info.is_main else lambda _: None
        estimate = RunEstimate(step, cfg.trainer.steps, cfg.trainer.eval_every, where, say)
        return Gauges(StepMeter(device), StepTimer(device), bar, estimate)

    def take_reading(self, gauges: Gauges) -> None:
        """Wait for the device once: the step times since the last reading into the progress, then
        the steps' mean loss and accuracy to the bar and tracker. A non-finite loss stops the run
        here, before any checkpoint is written, so ``last.pt`` always predates it."""
        progress = self.progress
        times = gauges.timer.flush()
        progress.step_times.extend(times)
        progress.train_s += sum(times)
        try:
            reading = gauges.meter.read(self.info)
        except NonFiniteLoss as err:
            where = (
                f"at step {err.step}" if err.step else f"on another rank by step {progress.step}"
            )
            good = (
                f"{self.folder.last} (step {progress.saved_step})"
                if progress.saved_step
                else "none (no checkpoint was written before it)"
            )
            raise RunError(
                f"loss became {err.loss} {where}; the last good checkpoint is {good} "
                "(try a lower trainer.lr or trainer.amp=false)"
            ) from None
        progress.tokens += reading.tokens
        lr = self.state.scheduler.get_last_lr()[0]
        gauges.bar.set_postfix(loss=f"{reading.loss:.4f}", acc=f"{reading.acc:.3f}", lr=f"{lr:.2e}")
        speed = reading.tokens / sum(times) if sum(times) > 0 else float("nan")
        self.tracker.log(
            {"train/loss": reading.loss, "train/acc": reading.acc, "train/lr": lr}
            | {"train/tokens_per_s": speed, "train/elapsed_s": progress.train_s},
            progress.step,
        )

    def evaluate_dev(self, bar: Any) -> None:
        """Dev accuracy; a new best is saved to ``best.pt`` (from evaluations after
        ``trainer.best_after`` of the steps, ``training_rules.keeps_best``)."""
        state, progress = self.state, self.progress
        val_acc = evaluate(state.module, self.data.val, state.device, state.amp_dtype, self.info)
        self.tracker.log({"val/acc": val_acc}, progress.step)
        if self.info.is_main:
            best = max(val_acc, progress.best_val)
            bar.write(f"step {progress.step}: val_acc={val_acc:.4f} (best {best:.4f})")
        if val_acc > progress.best_val:
            progress.best_val, progress.best_step = val_acc, progress.step
            if self.info.is_main and keeps_best(self.cfg.trainer, progress.step):
                model = {"model": state.module.state_dict(), "step": progress.step}
                best_pt = {**model, "config_hash": self.folder.config_digest}
                checkpoint.save_atomic(best_pt, self.folder.best)

    def stopped(self, why: str, bar: Any) -> dict[str, Any]:
        """The ``interrupted`` result, once every rank has stopped (``last.pt`` is written)."""
        barrier(self.info)
        bar.close()
        step = self.progress.step
        if self.info.is_main:
            print(
                f"stopped at step {step} ({why}); checkpoint {self.folder.last}; "
                "re-run the same command to resume"
            )
        return {
            "status": "interrupted",
            "step": step,
            "signal": self.stop.signum,
            "run_dir": str(self.folder.path),
        }

    # --- test and record -----------------------------------------------------------------------

    def leaderboard_row(self, test_acc: float) -> LeaderboardRow:
        """The run's leaderboard row: accuracies, time, memory and where the numbers came from."""
        cfg, progress, state = self.cfg, self.progress, self.state
        times = progress.step_times
        step_ms = 1000 * statistics.median(times) if times else float("nan")
        speed = round(progress.tokens / progress.train_s, 1) if progress.train_s > 0 else ""
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
            tokens_per_s=speed,
            peak_mem_mb=round(peak_memory_mb(state.device), 1),
            params=sum(p.numel() for p in state.module.parameters()),
            device=device_label(state.device, world=self.info.world_size),
            precision=precision_of(cfg.trainer.amp, state.device, cfg.trainer.amp_dtype)[0],
            compiled=bool(cfg.trainer.compile),
            batch_size=cfg.trainer.batch_size,
            max_len=cfg.task.max_len,
            commit=git_commit(),
            config_hash=self.folder.config_digest,
            overrides=hydra_overrides(),
            run_dir=str(self.folder.path),
            **run_labels(cfg),
            run_id=progress.run_id,
        )

    def record(self, row: dict[str, Any]) -> None:
        """Rank 0 writes ``results.json``, appends the row and marks ``last.pt`` complete; all
        ranks wait.

        Each step may be repeated: a run stopped between them is re-run from its last step, finds
        its ``results.json`` (same run id) and does not test again, and the leaderboard skips a
        row whose run id it holds, so no stop loses or doubles the row.
        """
        if self.info.is_main:
            atomic_write_json(self.folder.results, {"status": "complete", **row})
            append_row(self.cfg.paths.leaderboard, row)
            save_last(self, complete=True)
            clear_error(self.folder.path)
        barrier(self.info)


# --- last.pt, and the test of best.pt ------------------------------------------------------------


def save_last(run: Run, complete: bool = False) -> None:
    """Write ``last.pt`` (rank 0): module, optimiser, schedule, scaler, progress and every
    rank's RNG states.

    Every rank calls this (the RNG states are gathered), except for ``complete`` (rank 0
    alone).
    """
    rng = checkpoint.rank_rng_states(run.info, run.state.device, gather=not complete)
    if run.info.is_main:
        payload = {
            **run.state.state_dict(),
            "progress": run.progress.saved(),
            "rng": rng,
            "config_hash": run.folder.config_digest,
            "complete": complete,
        }
        checkpoint.save_atomic(payload, run.folder.last, keep_previous=True)
    run.progress.saved_step = run.progress.step  # every rank knows what is saved


def test_best(run: Run) -> float:
    """Test accuracy of the best dev checkpoint (of the last weights when none was kept).

    The module gets its last weights back afterwards: the complete ``last.pt`` holds them.
    """
    state, test = run.state, run.data.test
    barrier(run.info)
    if not run.folder.best.exists():
        return evaluate(state.module, test, state.device, state.amp_dtype, run.info)
    final = copy.deepcopy(state.module.state_dict())
    state.module.load_state_dict(checkpoint.load(run.folder.best)["model"])
    try:
        return evaluate(state.module, test, state.device, state.amp_dtype, run.info)
    finally:
        state.module.load_state_dict(final)
