"""Expectations first: one line estimating the whole run's time from its first measured steps.

The first step (warm-up: allocation, compilation) is left out; the estimate comes once
``MIN_STEPS`` further steps took ``MIN_SECONDS`` of wall time, or ``MAX_WAIT_S`` passed, whichever
is first. A CPU run estimated at more than ``CPU_DEMO_HINT_H`` hours also points at
``experiment=cpu_demo``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MIN_STEPS = 3
MIN_SECONDS = 2.0
MAX_WAIT_S = 30.0
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
    """Call ``tick(step)`` after every training step; it calls ``say`` once with the estimate."""

    def __init__(
        self,
        start_step: int,
        total_steps: int,
        evaluations: int,
        device: str,
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.evaluations, self.device = total_steps, evaluations, device
        self.say, self.clock = say, clock
        self.first: tuple[int, float] | None = None  # (step, time) after the warm-up step
        self.done = start_step >= total_steps

    def tick(self, step: int) -> None:
        if self.done:
            return
        now = self.clock()
        if self.first is None:
            self.first = (step, now)
            return
        steps, seconds = step - self.first[0], now - self.first[1]
        if (steps >= MIN_STEPS and seconds >= MIN_SECONDS) or seconds >= MAX_WAIT_S:
            self.done = True
            self.say(self.line(seconds / steps, self.total - step))

    def line(self, per_step: float, left: int) -> str:
        """The estimate's text for ``left`` steps at ``per_step`` seconds each."""
        total = per_step * left
        evals = f" plus {self.evaluations} dev evaluations" if self.evaluations else ""
        text = (
            f"estimate: {left:,} steps left at {per_step:.3g} s/step on {self.device} "
            f"= about {duration(total)} of training{evals}"
        )
        if self.device.startswith("cpu") and total > CPU_DEMO_HINT_H * 3600:
            text += f"; {CPU_DEMO_HINT}"
        return text
