"""The job log (Hydra's ``lra_bench.log``) receives what the terminal shows.

The run prints its lines (start, evaluations, the final row, errors) and a progress bar rather
than logging them, so Hydra's log file would stay empty. ``mirror_to_job_log`` copies stdout and
stderr into the file Hydra's logging writes to: whole lines only, and of a line redrawn with
carriage returns (a progress bar) only its last state, as the terminal leaves it (a bar
that clears itself leaves nothing).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO


class Mirror:
    """A text stream writing through to ``stream`` and, line by line, to ``log``."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self.stream, self.log, self.pending = stream, log, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            shown = line.split("\r")[-1].rstrip()  # what a redrawn line ends as
            if shown.strip():
                self.log.write(shown + "\n")
        if lines:
            self.log.flush()
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...
        return getattr(self.stream, name)


def job_log_path() -> Path | None:
    """The file of the root logger's file handler (Hydra's job log), if there is one."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            return Path(handler.baseFilename)
    return None


@contextmanager
def mirror_to_job_log(path: Path | None = None) -> Iterator[Path | None]:
    """While inside, stdout and stderr are also written to ``path`` (default: the job log)."""
    path = path or job_log_path()
    if path is None:
        yield None
        return
    saved = sys.stdout, sys.stderr
    with open(path, "a", encoding="utf-8") as log:
        sys.stdout, sys.stderr = Mirror(saved[0], log), Mirror(saved[1], log)
        try:
            yield path
        finally:
            for mirror in (sys.stdout, sys.stderr):
                if isinstance(mirror, Mirror) and mirror.pending.strip():
                    mirror.write("\n")
            sys.stdout, sys.stderr = saved
