"""Where cases run: a worker process (killed and replaced on a hang or crash) or the calling
process.

Every case ends with a status: ``ok``, ``oom`` (out of memory, or killed by the system),
``timeout`` (ran past its limit), ``invalid`` (the variant's settings do not fit this length)
or ``error``. A failing case never stops the bench.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import resource
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from lra_bench.benchmarking.measure import Case, CaseTimeout, run_case
from lra_bench.runtime import proc_status_kb

# errors after which the CUDA context is unusable ("sticky"): every later case in that process fails
STICKY_MARKERS = (
    "cuda error",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "misaligned address",
    "cublas_status_execution_failed",
)
OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "not enough memory",
    "bad_alloc",
    "cannot allocate memory",
)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def is_sticky(err: BaseException) -> bool:
    """True for an error that leaves the process's CUDA context broken (device-side assert, ...)."""
    if (
        type(err).__name__ == "AcceleratorError"
    ):  # torch's own class for such errors, where it has one
        return True
    text = str(err).lower()
    return any(marker in text for marker in STICKY_MARKERS)


def execute(case: Case, run: Callable[[Case], dict[str, Any]] = run_case) -> dict[str, Any]:
    """Run ``case`` here and return its measures with a status (never raises for a failing case).

    A result with ``restart: True`` asks for a fresh process before the next case (sticky CUDA
    error). A ``TimingGroup`` (cases already checked and run alone) runs its interleaved rounds.
    """
    from lra_bench.attention import make_config
    from lra_bench.benchmarking.rounds import TimingGroup, interleave

    if isinstance(case, TimingGroup):
        return _guarded(lambda: interleave(case))
    try:
        head_dim = getattr(case, "head_dim", None) or case.model["dim"] // case.model["num_heads"]  # type: ignore[union-attr]
        make_config(case.attn).check(max_len=case.n, head_dim=head_dim)
    except ValueError as err:
        return {"status": "invalid", "error": str(err)}
    return _guarded(lambda: run(case))


def _guarded(measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()`` with a status: ok, or the failure it ran into (recorded, not raised)."""
    try:
        return {"status": "ok", **measure()}
    except CaseTimeout as err:
        return {"status": "timeout", "error": str(err)}
    except (MemoryError, torch.cuda.OutOfMemoryError) as err:
        return {"status": "oom", "error": _one_line(err)}
    except Exception as err:  # any failure of one variant is recorded, not raised
        oom = any(marker in str(err).lower() for marker in OOM_MARKERS)
        result = {"status": "oom" if oom else "error", "error": _one_line(err)}
        return {**result, "restart": True} if is_sticky(err) else result
    finally:
        gc.collect()  # free what a failed case left in reference cycles before the next one
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def available_memory_mb() -> float | None:
    """MemAvailable from /proc/meminfo (None where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


@contextmanager
def memory_cap(extra_mb: float | None) -> Iterator[None]:
    """Cap the address space at its current size + ``extra_mb`` while the block runs (Linux).

    An allocation past the cap fails with an error (recorded as ``oom``) instead of pushing the
    machine out of memory. The previous limit is restored afterwards.
    """
    previous = resource.getrlimit(resource.RLIMIT_AS)
    applied = False
    if extra_mb:
        try:
            size = proc_status_kb("VmSize") * 1024
            limit = size + int(extra_mb * 2**20)
            if previous[1] != resource.RLIM_INFINITY:
                limit = min(limit, previous[1])
            resource.setrlimit(resource.RLIMIT_AS, (limit, previous[1]))
            applied = True
        except (OSError, ValueError, KeyError):
            pass
    try:
        yield
    finally:
        if applied:
            resource.setrlimit(resource.RLIMIT_AS, previous)


def _serve(
    conn: Any, threads: int | None, run: Callable[[Case], dict[str, Any]] = run_case
) -> None:
    """Worker loop: receive a case, send back its result, until told to stop (or its CUDA context
    broke)."""
    if threads:
        torch.set_num_threads(threads)
    import lra_bench.attention  # noqa: F401 - register the variants before the first case

    gc.freeze()  # keep the imported objects out of the per-case collections (they take ~0.2 s each)
    conn.send("ready")
    while True:
        try:
            case = conn.recv()
        except EOFError:
            return
        if case is None:
            return
        with memory_cap(case.mem_limit_mb):
            result = execute(case, run)
        conn.send(result)
        if result.get("restart"):
            return


class InProcess:
    """Run cases in this process: time limits are checked between runs, a hang cannot be stopped."""

    def __init__(self, threads: int | None = None) -> None:
        if threads:
            torch.set_num_threads(threads)

    def run(self, case: Case) -> dict[str, Any]:
        result = execute(case)
        if result.pop("restart", False):
            result["error"] += (
                " (the CUDA context may be broken for later cases: use isolate=process)"
            )
        return result

    def close(self) -> None:
        pass


class Worker:
    """Run cases in a long-lived child process; a case past its limit plus a grace period kills it.

    The grace (``grace_s``; default the case's own limit, at most 30 s) leaves room for the
    limit checks between runs, which stop a case without killing the worker.

    A killed or crashed worker, or one whose CUDA context a sticky error broke, is replaced for
    the next case. A case's ``mem_limit_mb`` caps the extra address space it may take (see
    ``memory_cap``). ``run`` is what measures a case in the child (a module-level function).
    """

    def __init__(
        self,
        threads: int | None = None,
        grace_s: float | None = None,
        start_timeout_s: float = 300.0,
        run: Callable[[Case], dict[str, Any]] = run_case,
    ) -> None:
        self.threads, self.grace_s, self.start_timeout_s, self.measure = (
            threads,
            grace_s,
            start_timeout_s,
            run,
        )
        self.proc: Any = None
        self.conn: Any = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve, args=(child, self.threads, self.measure), daemon=True
        )
        self.proc.start()
        child.close()
        if not self.conn.poll(self.start_timeout_s) or self._recv() != "ready":
            self._kill()
            raise RuntimeError("the bench worker process did not start")

    def _recv(self) -> Any:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def _kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(10)
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def run(self, case: Case) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._kill()
            self._start()
        self.conn.send(case)
        grace = min(case.time_limit_s, 30.0) if self.grace_s is None else self.grace_s
        limit = case.time_limit_s + grace
        if not self.conn.poll(limit):
            self._kill()
            return {"status": "timeout", "error": f"killed after {limit:.0f} s"}
        result = self._recv()
        if result is None:  # the child died mid-case
            self.proc.join(10)
            code = self.proc.exitcode
            self._kill()
            if code == -signal.SIGKILL:
                return {
                    "status": "oom",
                    "error": "the worker was killed (SIGKILL), most likely out of memory",
                }
            return {"status": "error", "error": f"the worker exited with code {code}"}
        if result.pop("restart", False):  # a sticky CUDA error: the next case gets a fresh process
            self._kill()
        return result

    def close(self) -> None:
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(10)
            except (OSError, BrokenPipeError):
                pass
        self._kill()


def make_runner(isolate: str, threads: int | None) -> InProcess | Worker:
    """``process`` -> Worker, ``none`` -> InProcess."""
    return InProcess(threads) if isolate == "none" else Worker(threads)


def default_mem_limit_mb(setting: float | None, device: torch.device) -> float | None:
    """The per-case memory cap: CPU only; None -> 80% of the available memory, 0 -> no cap."""
    if device.type != "cpu" or (setting is not None and setting <= 0):
        return None
    if setting is not None:
        return float(setting)
    avail = available_memory_mb()
    return 0.8 * avail if avail else None
