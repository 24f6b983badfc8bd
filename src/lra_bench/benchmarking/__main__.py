"""``python -m lra_bench.bench`` (or ``python -m lra_bench.benchmarking``): attention time and
memory vs sequence length, whole training steps, or the data loader alone.

    python -m lra_bench.bench attn=softmax,skyformer,performer    # defaults: config.py
    python -m lra_bench.bench attn=all n=1024,2048 device=cuda
    python -m lra_bench.bench mode=train_step task=text attn=softmax,skyformer
    python -m lra_bench.bench mode=data task=listops run.data.bucket=true

Attention mode times forward (no grad) and forward+backward of each attention module on random
q, k, v ``[batch, heads, n, head_dim]``, laid out as the model hands them over (views of one
projection's output; backward stops at them), and measures the peak extra memory (see
``benchmarking/measure.py``). Train-step mode times the training loop's own step
(``step.train_step``: forward, backward, clipping, AdamW and schedule) of the task model on
random tokens, each variant with its run's composed config (``trained.py``: its attention
dropout included unless ``dropout=`` replaces it). Data mode times the run's own loader on the
task's data (``run.<key>=<value>`` overrides the run config, see ``benchmarking/loader.py``).
Each (attention, n) case runs in a worker process with a time limit; an OOM or a timeout is recorded
in its row and the bench goes on. Unless ``quick=true``, the variants of each length then run again
in interleaved rounds (``rounds.py``) for steady time ratios. Outputs: a new timestamped CSV
(rewritten after every case), Markdown tables on stdout (and next to the CSV), in attention mode a
plot, and copies under the un-timestamped names (``outputs.py``).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from lra_bench.benchmarking import tables
from lra_bench.benchmarking.config import BenchConfig, check
from lra_bench.benchmarking.measure import (
    AttentionCase,
    Case,
    TrainStepCase,
    tokens_per_step,
)
from lra_bench.benchmarking.outputs import new_stem, publish_latest
from lra_bench.benchmarking.rounds import TimingGroup, summarise
from lra_bench.benchmarking.trained import precision_label, trained_settings
from lra_bench.benchmarking.variants import BenchError, Variant, resolve
from lra_bench.benchmarking.worker import default_mem_limit_mb, make_runner
from lra_bench.errors import LraBenchError, closed_output_status, error_status
from lra_bench.io import atomic_write_text
from lra_bench.paths import conf_dir
from lra_bench.runtime import device_label, resolve_device

RUN_PREFIX = "run."  # data mode: ``run.data.bucket=true`` overrides the timed run's config
LIST_KEYS = {"attn": "attns", "attns": "attns", "n": "n"}


def expand_shorthand(argv: Sequence[str]) -> list[str]:
    """``attn=a,b`` -> ``attns=['a','b']``, ``n=1,2`` -> ``n=[1,2]`` (Hydra would read a bare
    comma list as a sweep, and ``attn`` alone as the attention config group), and the
    ``run.<override>`` arguments -> ``run=['<override>', ...]``."""
    if any(arg in ("-m", "--multirun") for arg in argv):
        return list(argv)
    out, run = [], []
    for arg in argv:
        if arg.startswith(RUN_PREFIX):
            run.append(arg[len(RUN_PREFIX) :])
            continue
        key, sep, value = arg.partition("=")
        if sep and key in LIST_KEYS and not value.startswith(("[", "'", '"')):
            items = [item.strip() for item in value.split(",") if item.strip()]
            if key == "n":
                arg = f"n=[{','.join(items)}]"
            else:
                arg = (
                    "attns=["
                    + ",".join(f"'{item}'" if "'" not in item else item for item in items)
                    + "]"
                )
        out.append(arg)
    if run:
        out.append("run=[" + ",".join(f"'{item}'" for item in run) + "]")
    return out


def pick_device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ValueError as err:
        raise BenchError(f"device={name}: {err}") from None


def lengths(cfg: DictConfig) -> list[int]:
    """Attention mode's sequence lengths, shortest first, each once."""
    return sorted(set(cfg.n))


def make_cases(cfg: DictConfig, variants: list[Variant], device: torch.device) -> list[Case]:
    """Attention mode: every (n, variant), shorter lengths first; train_step: one per variant."""
    common = {
        "device": str(device),
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "time_limit_s": float(cfg.case_timeout_s),
        "seed": cfg.seed,
        "mem_limit_mb": default_mem_limit_mb(cfg.mem_limit_mb, device)
        if cfg.isolate == "process"
        else None,
    }
    if cfg.mode == "attention":
        return [
            AttentionCase(
                v.label, v.config, n, cfg.batch, cfg.heads, cfg.head_dim, dtype=cfg.dtype, **common
            )
            for n in lengths(cfg)
            for v in variants
        ]
    cases: list[Case] = []
    for v in variants:
        run = trained_settings(cfg, v)
        n = cfg.train.seq_len or run.task["max_len"]
        batch = cfg.train.batch_size or run.trainer["batch_size"]
        cases.append(
            TrainStepCase(v.label, run.attn, run.task, run.model, run.trainer, n, batch, **common)
        )
    return cases


def make_row(
    cfg: DictConfig, case: Case, variant: Variant, result: dict[str, Any], device: str, threads: int
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "attn": variant.name,
        "label": variant.label,
        "n": case.n,
        "batch": case.batch,
        "device": device,
        "threads": threads,
        "options": variant.options_text,
        **result,
    }
    if isinstance(case, AttentionCase):
        row.update(heads=case.heads, head_dim=case.head_dim, dtype=case.dtype)
    else:
        row.update(
            task=cfg.task.name,
            attn_dropout=case.attn.get("dropout", ""),
            dtype=precision_label(case.trainer, case.device),
        )
    return row


def output_stem(cfg: DictConfig) -> Path:
    name = "attention" if cfg.mode == "attention" else f"{cfg.mode}_{cfg.task.name}"
    return Path(cfg.out_dir) / name


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Run the bench ``cfg`` describes; returns its CSV rows (also written under ``out_dir``).

    Stopped by SIGTERM or Ctrl-C, it still writes its CSV, tables and plot (the cases not run
    marked ``skipped``), then raises KeyboardInterrupt.
    """
    check(cfg)
    if cfg.mode == "data":
        return run_data(cfg)
    fixed = cfg.dropout if cfg.mode == "train_step" or cfg.dropout is not None else 0.0
    variants = resolve(cfg.attns, fixed)
    device = pick_device(cfg.device)
    cases = make_cases(cfg, variants, device)
    if cfg.baseline not in {v.label for v in variants}:
        print(
            f"note: baseline {cfg.baseline!r} is not among the attentions: no ratios",
            file=sys.stderr,
        )
    stem = new_stem(output_stem(cfg))
    rows, stopped = run_cases(cfg, cases, variants, device, stem)
    write_outputs(cfg, rows, stem)
    if stopped:
        raise KeyboardInterrupt
    return rows


def run_data(cfg: DictConfig) -> list[dict[str, Any]]:
    """Data mode: the loader of the task's run config (with the ``run`` overrides), timed alone."""
    from lra_bench.benchmarking.loader import time_loader
    from lra_bench.compose import compose_config
    from lra_bench.config import validate
    from lra_bench.errors import ConfigError, DataError

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        run_cfg = compose_config([f"task={cfg.task.name}", *cfg.run])
        validate(run_cfg)
        load = load_avg()
        row = {
            **time_loader(cfg, run_cfg),
            "threads": torch.get_num_threads(),
            "load_avg": load,
            "run": " ".join(cfg.run),
        }
    except (ConfigError, DataError) as err:
        raise BenchError(f"data mode: {err}") from None
    except Exception as err:  # Hydra's own override errors
        if type(err).__module__.startswith(("hydra", "omegaconf")):
            raise BenchError(f"run: {str(err).splitlines()[0]}") from None
        raise
    rows = [row]
    stem = new_stem(output_stem(cfg))
    tables.write_csv(stem.with_suffix(".csv"), rows, tables.DATA_COLUMNS)
    write_outputs(cfg, rows, stem)
    return rows


def skip_reason(cfg: DictConfig, case: Case, failed: set[str], start: float) -> str | None:
    """Why ``case`` is not run: a shorter length of its attention failed, or the budget is spent."""
    if cfg.skip_longer_after_failure and case.label in failed:
        return "a shorter length ran out of memory or time"
    if cfg.budget_s is not None and time.monotonic() - start > cfg.budget_s:
        return f"the bench's budget_s={cfg.budget_s:g} was spent"
    return None


def load_avg() -> float | str:
    """The 1-minute load average, rounded ("" where the system does not give one)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else ""


@dataclass
class CaseRows:
    """The bench's rows so far, rewritten with ratios to its CSV after every case."""

    cfg: DictConfig
    variants: dict[str, Variant]
    device: str  # the device as rows name it
    threads: int
    csv_path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, case: Case, result: dict[str, Any], load: float | str) -> None:
        variant = self.variants[case.label]
        row = make_row(self.cfg, case, variant, result, self.device, self.threads)
        self.rows.append({**row, "load_avg": load})

    def save(self) -> None:
        cfg = self.cfg
        columns = tables.ATTENTION_COLUMNS if cfg.mode == "attention" else tables.TRAIN_STEP_COLUMNS
        tables.add_ratios(self.rows, cfg.baseline, cfg.mode)
        tables.write_csv(self.csv_path, self.rows, columns)


def run_cases(
    cfg: DictConfig, cases: list[Case], variants: list[Variant], device: torch.device, stem: Path
) -> tuple[list[dict[str, Any]], bool]:
    """Each case in turn (or skipped), the CSV rewritten with ratios after every one; and whether
    SIGTERM or Ctrl-C stopped the bench (the cases left are then rows marked ``skipped``)."""
    threads = cfg.threads or torch.get_num_threads()
    by_label = {v.label: v for v in variants}
    log = CaseRows(cfg, by_label, device_label(device, threads), threads, stem.with_suffix(".csv"))
    runner = make_runner(cfg.isolate, cfg.threads)
    bar = tqdm(
        cases,
        desc=f"bench {cfg.mode}",
        disable=not cfg.progress,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    try:
        with TermAsInterrupt():
            run_each(cfg, bar, cases, runner, log)
    except KeyboardInterrupt:
        print(
            f"\nstopped after {len(log.rows)} of {len(cases)} cases: tables and plot from those",
            file=sys.stderr,
        )
        for case in cases[len(log.rows) :]:
            result = {"status": "skipped", "error": "the bench was stopped (SIGTERM or Ctrl-C)"}
            log.add(case, result, "")
        log.save()
        return log.rows, True
    finally:
        bar.close()
        runner.close()
    return log.rows, False


def run_each(cfg: DictConfig, bar: Any, cases: list[Case], runner: Any, log: CaseRows) -> None:
    """Run (or skip) every case of ``bar``; after the last case of each length, unless
    ``quick``, that length's interleaved rounds."""
    failed: set[str] = set()
    start = time.monotonic()
    for i, case in enumerate(bar):
        bar.set_postfix_str(f"{case.label} n={case.n}")
        load = load_avg()
        skipped = skip_reason(cfg, case, failed, start)
        result = runner.run(case) if skipped is None else {"status": "skipped", "error": skipped}
        if result["status"] in ("oom", "timeout"):
            failed.add(case.label)
        log.add(case, result, load)
        last_of_length = i + 1 == len(cases) or cases[i + 1].n != case.n
        if not cfg.quick and last_of_length:
            bar.set_postfix_str(f"interleaved rounds n={case.n}")
            interleave_length(cfg, runner, cases[: i + 1], log.rows)
        log.save()


def interleave_length(
    cfg: DictConfig, runner: Any, cases: list[Case], rows: list[dict[str, Any]]
) -> None:
    """Time the cases of the last length that ran ok in interleaved rounds (``rounds.py``) and
    put their round-by-round times and ratios into their rows."""
    n = cases[-1].n
    ok = {row["label"] for row in rows if row["n"] == n and row["status"] == "ok"}
    group_cases = tuple(c for c in cases if c.n == n and c.label in ok)
    if cfg.baseline not in ok or len(group_cases) < 2:
        return
    by_label = {row["label"]: row for row in rows if row["n"] == n}
    ops = ("fwd_ms", "fwdbwd_ms") if cfg.mode == "attention" else ("step_ms",)
    round_s = sum(float(by_label[c.label][op]) for c in group_cases for op in ops) / 1000
    spread = cfg.spread
    group = TimingGroup(
        group_cases,
        cfg.baseline,
        spread.window,
        spread.tolerance,
        float(spread.budget_s),
        spread.max_rounds,
        time_limit_s=float(spread.budget_s) + 4 * round_s + 60,
        mem_limit_mb=group_cases[0].mem_limit_mb,
    )
    result = runner.run(group)
    if result["status"] != "ok":
        print(f"n={n}: interleaved rounds {result['status']}: {result.get('error', '')}; "
              "ratios from each variant's own runs", file=sys.stderr)  # fmt: skip
        return
    for label, figures in summarise(result, group).items():
        row = by_label[label]
        row.update(figures)
        if "step_ms" in figures:
            row["steps_per_s"] = 1000 / figures["step_ms"]
            row["tokens_per_s"] = row["steps_per_s"] * tokens_per_step(
                next(c for c in group_cases if c.label == label)  # type: ignore[arg-type]
            )


class TermAsInterrupt:
    """While active, SIGTERM (``timeout``, a job scheduler) stops the bench like Ctrl-C, so its
    outputs are still written."""

    def __enter__(self) -> TermAsInterrupt:
        try:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread
            self.previous = None
        return self

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def write_outputs(cfg: DictConfig, rows: list[dict[str, Any]], stem: Path) -> None:
    """The Markdown tables (stdout and ``.md``), problems on stderr, in attention mode the plot,
    and the copies of this run's files under the un-timestamped names (``outputs.py``)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    if cfg.mode == "data":
        table = tables.data_markdown(rows)
    elif cfg.mode == "attention":
        table = tables.attention_markdown(rows, cfg.baseline)
    else:
        table = tables.train_step_markdown(rows, cfg.baseline, cfg.dropout)
    atomic_write_text(stem.with_suffix(".md"), table + "\n")
    print(table)
    for row in rows:
        if row.get("status") in ("error", "invalid"):
            print(f"{row['label']} n={row['n']}: {row['error']}", file=sys.stderr)
    print(f"\nwrote {stem.with_suffix('.csv')}", end="")
    if (
        cfg.mode == "attention"
        and cfg.plot
        and tables.plot_attention(rows, stem.with_suffix(".png"))
    ):
        print(f" and {stem.with_suffix('.png')}", end="")
    copies = publish_latest(stem, output_stem(cfg))
    print(f" (latest copies: {', '.join(p.name for p in copies)})")


@hydra.main(config_path=str(conf_dir()), config_name="bench", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (
        LraBenchError
    ) as err:  # a bad bench setting, or two plugins registering one attention name
        sys.exit(error_status(err))
    except KeyboardInterrupt:
        sys.exit(130)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry: expand the list shorthands, then hand over to Hydra; a setting Hydra
    refuses (an unknown key, a value of the wrong type) costs one line and exit status 2."""
    args = sys.argv[1:] if argv is None else list(argv)
    sys.argv = [sys.argv[0], *expand_shorthand(args)]
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's errors come to us, not as its own report
    try:
        _app()
    except (HydraException, OmegaConfBaseException) as err:
        sys.exit(error_status(composition_problem(err)))
    except BrokenPipeError:  # ``--help | head``
        sys.exit(closed_output_status())


def composition_problem(err: BaseException) -> str:
    """Hydra's or OmegaConf's error as one line; an unknown key names the closest settings."""
    from lra_bench.precheck import describe
    from lra_bench.typo_hints import UNKNOWN, hint, setting_names

    message = describe(err)
    unknown = UNKNOWN.search(message)
    if unknown is None:
        return message
    key = unknown.group(1).lstrip("+~")
    names = setting_names(OmegaConf.structured(BenchConfig))
    return hint(key, names, kind="bench setting", listing="")


if __name__ == "__main__":
    main()
