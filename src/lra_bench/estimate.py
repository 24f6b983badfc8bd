"""Expectations first: the whole run's time, estimated early and re-estimated once it is known.

Two lines, each said once:

- the first, soon after the start: the training steps' rate, once ``MIN_STEPS`` steps after the
  first (warm-up: allocation, compilation) took ``MIN_SECONDS`` of wall time, or ``MAX_WAIT_S``
  passed. It counts training steps only (their data included); the dev evaluations are named,
  not yet timed.
- the second, on the step after the first dev evaluation: the wall time per step since that
  first step, everything the loop does included (data, logging, the evaluation, checkpoints),
  times the steps left. Evaluations and checkpoints recur every ``eval_every``/``ckpt_every``
  steps, so this average holds for the rest of the run; it also catches a machine whose load
  changed since the first line.

A CPU run estimated at more than ``CPU_DEMO_HINT_H`` hours also points at ``experiment=cpu_demo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_STEPS = 20  # batches vary (bucketed lengths, loader stalls): a few steps can be off 2x
MIN_SECONDS = 20.0
MAX_WAIT_S = 60.0
CPU_DEMO_HINT_H = 2.0
CPU_DEMO_HINT = (
    "a CPU run this long is rarely what you want: "
    "`python -m lra_bench task=listops attn=<attn> experiment=cpu_demo` trains a smaller ListOps "
    "in minutes (README, Run)"
)


def duration(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.4 h`` or ``2.1 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class RunEstimate:
    """Call ``tick(step)`` after every training step; it calls ``say`` with each estimate."""

    def __init__(
        self,
        start_step: int,
        total_steps: int,
        eval_every: int,
        device: str,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.device = total_steps, device
        self.say, self.clock = say, clock
        self.evaluations = total_steps // eval_every - start_step // eval_every
        first_eval = (start_step // eval_every + 1) * eval_every
        self.recheck_at = first_eval + 1 if first_eval < total_steps else None
        self.first: tuple[int, float] | None = None  # (step, time) after the warm-up step
        self.said_first = start_step >= total_steps

    def tick(self, step: int) -> None:
        now = self.clock()
        if self.first is None:
            self.first = (step, now)
            return
        steps, seconds = step - self.first[0], now - self.first[1]
        if step == self.recheck_at:
            self.said_first = True
            self.say(self.recheck_line(seconds / steps, step))
        if self.said_first:
            return
        if (steps >= MIN_STEPS and seconds >= MIN_SECONDS) or seconds >= MAX_WAIT_S:
            self.said_first = True
            self.say(self.line(seconds / steps, self.total - step))

    def line(self, per_step: float, left: int) -> str:
        """The first estimate: ``left`` training steps at ``per_step`` seconds each."""
        total = per_step * left
        evals = (
            f" plus {self.evaluations} dev evaluations (re-estimated after the first)"
            if self.recheck_at is not None
            else f" plus {self.evaluations} dev evaluations" * bool(self.evaluations)
        )
        text = (
            f"estimate: {left:,} steps left at {per_step:.3g} s/step on {self.device} "
            f"= about {duration(total)} of training{evals}"
        )
        return self.with_hint(text, total)

    def recheck_line(self, per_step: float, step: int) -> str:
        """The second estimate: the rest of the run at the measured wall time per step."""
        left = self.total - step
        total = per_step * left
        text = (
            f"estimate at step {step:,}: {left:,} steps left at {per_step:.3g} s/step on "
            f"{self.device}, data, evaluation and checkpoints included = about {duration(total)}"
        )
        return self.with_hint(text, total)

    def with_hint(self, text: str, seconds: float) -> str:
        """``text``, with the pointer at cpu_demo when a CPU run takes that long."""
        if self.device.startswith("cpu") and seconds > CPU_DEMO_HINT_H * 3600:
            return f"{text}; {CPU_DEMO_HINT}"
        return text
