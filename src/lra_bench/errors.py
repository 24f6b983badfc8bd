"""The package's one-line error types.

Each is raised with a message that fits on one line: what went wrong, where, and how to fix
it. Command-line entry points catch ``LraBenchError`` and print ``error: <message>``
instead of a traceback. This module imports nothing else of the package, so any module may
use it without an import cycle.
"""

from __future__ import annotations

import os
import sys

ERROR_STATUS = 2  # the exit status of a run or command stopped by an error meant for the user
CLOSED_OUTPUT_STATUS = 128 + 13  # what a shell reports for a process stopped by SIGPIPE


class LraBenchError(Exception):
    """Base of every error meant for the user; ``str(err)`` is one line."""


class ConfigError(LraBenchError, ValueError):
    """An invalid setting; the message names the key, the value and the rule."""


class DataError(LraBenchError, RuntimeError):
    """Missing or malformed data: what, where, how to fix."""


class RunError(LraBenchError, RuntimeError):
    """A run that cannot go on (NaN loss, mismatched
    checkpoint, run folder held by another process)."""


class DiskFullError(LraBenchError, OSError):
    """No space left on the device (or the quota) while writing a named file."""


class ResultsError(LraBenchError, RuntimeError):
    """A results file cannot be written or read as asked."""


class ReportError(LraBenchError):
    """A leaderboard report cannot be produced as asked."""


class BenchError(LraBenchError, ValueError):
    """A bench command line that cannot be run."""


class ApproxError(LraBenchError, ValueError):
    """An approximation-error command line that cannot be run."""


class ConformanceError(LraBenchError, AssertionError):
    """An attention failed a check of the conformance
    kit (``lra_bench.testing``); names the check."""


def error_status(problem: object) -> int:
    """Print ``error: <problem>`` (one line) on stderr; the exit status it ends with. Every
    command maps an error meant for the user to its exit status here."""
    print(f"error: {problem}", file=sys.stderr)
    return ERROR_STATUS


def closed_output_status() -> int:
    """The exit status of a command whose reader closed its output (``... --help | head``): no
    traceback, and stdout pointed at /dev/null so that the interpreter's last flush cannot fail
    again. Not 0: a run stopped this way did not finish."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return CLOSED_OUTPUT_STATUS
