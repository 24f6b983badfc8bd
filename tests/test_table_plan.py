"""``table plan`` stopped by a signal leaves no measuring process behind: the bench worker is
killed on the way out (SIGINT, SIGTERM) and dies with its parent even when that is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lra_bench.table import estimate as est


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def worker_of(proc: subprocess.Popen, stderr: Path) -> int:
    """The bench worker of a running plan (its spawned child), once it runs a case: the case's
    memory cap (a limit on its address space) is then set."""
    found: list[int] = []

    def measuring() -> bool:
        assert proc.poll() is None, stderr.read_text()[-2000:]
        found[:] = [c for c in children(proc.pid) if b"spawn_main" in _cmdline(c)]
        return bool(found) and address_space_limit(found[0]) != b"unlimited"

    wait_for(measuring, 300, "the plan's worker started no case")
    return found[0]


def address_space_limit(pid: int) -> bytes:
    """The soft limit on the address space of ``pid`` (``unlimited`` when none is set)."""
    try:
        lines = Path(f"/proc/{pid}/limits").read_bytes().splitlines()
    except OSError:
        return b"unlimited"
    line = next((x for x in lines if x.startswith(b"Max address space")), b"")
    return line.split()[3] if len(line.split()) > 3 else b"unlimited"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_a_stopped_plan_leaves_no_worker(tmp_path: Path, cache_dir: Path, sig: int) -> None:
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1",
           "LRA_BENCH_CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    cmd = [sys.executable, "-m", "lra_bench.table", "plan", "experiment=skyformer_table1",
           "task=text", "attn=softmax,skyformer", "seed=0", "--budget", "600"]  # fmt: skip
    # stderr into a file, whose end a failure shows (the plan's own words on why it did not stop)
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=err, text=True)
    try:
        worker = worker_of(proc, stderr)
        time.sleep(1.0)  # into its case
        os.kill(proc.pid, sig)
        code = proc.wait(60)
        expected = {signal.SIGTERM: 143, signal.SIGINT: 130}.get(sig, -signal.SIGKILL)
        assert code == expected, stderr.read_text()[-2000:]
        wait_for(lambda: not alive(worker), 10, "the worker outlived the plan")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_a_child_that_asked_dies_with_its_parent(tmp_path: Path) -> None:
    """``die_with_parent`` in a grandchild; the child is SIGKILLed; the grandchild goes too."""
    src = str(Path(__file__).resolve().parents[1] / "src")
    pid_file = tmp_path / "grandchild"
    grandchild = (
        "import os, time; from lra_bench.table.estimate import die_with_parent; die_with_parent(); "
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    child = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]);"
        " time.sleep(120)"
    )
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-c", child], env=env)
    try:
        wait_for(lambda: pid_file.exists() and pid_file.read_text(), 120, "no grandchild")
        grand = int(pid_file.read_text())
        assert alive(grand)
        proc.kill()
        proc.wait()
        wait_for(lambda: not alive(grand), 10, "the grandchild outlived its parent")
    finally:
        proc.kill()
    assert est.PR_SET_PDEATHSIG == 1
