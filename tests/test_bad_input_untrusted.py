"""Bad input that used to be trusted: damaged caches and release folders, impossible settings,
stopped peers and misbehaving plugins. Each gives one line and loses nothing."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib.metadata import EntryPoint

import pytest
from PIL import Image

from lra_bench.compose import compose_config
from lra_bench.train import main
from test_attention_plugins import cli, fake_install
from test_bad_input import failing
from test_cache import shift_boundary
from test_pathfinder_reader import write_release

# --- caches that cannot lie -----------------------------------------------------------------------


def first_run(overrides: list[str], tmp_path) -> None:
    """One smoke step into its own run folder: builds the cache entry the test then damages."""
    run = [*overrides, "trainer.stop_at_step=1", f"paths.run_dir={tmp_path / 'first'}"]
    assert main(compose_config(run)) == 0


def rows(board) -> int:
    with open(board, newline="") as f:
        return len(list(csv.DictReader(f)))


def test_a_moved_example_boundary_in_the_cache_is_rebuilt(capsys, smoke_overrides, tmp_path):
    overrides = [*smoke_overrides, f"paths.cache_dir={tmp_path / 'cache'}"]
    first_run(overrides, tmp_path)
    (arrow,) = (tmp_path / "cache").glob("listops-*/train/data-*.arrow")
    shift_boundary(arrow, row=9, by=5)  # row 9 gains 5 tokens that row 10 loses
    capsys.readouterr()
    assert main(compose_config(overrides)) == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if "notice" in line]
    assert notices == [
        f"notice: rebuilding the data cache {arrow.parents[1]}: train split does not match the"
        " digest recorded in key.json (column input_ids)"
    ]
    assert rows(tmp_path / "leaderboard.csv") == 1


def test_key_json_of_the_wrong_shape_is_rebuilt(capsys, smoke_overrides, tmp_path):
    overrides = [*smoke_overrides, f"paths.cache_dir={tmp_path / 'cache'}"]
    first_run(overrides, tmp_path)
    (key,) = (tmp_path / "cache").glob("listops-*/key.json")
    key.write_text(json.dumps([1, 2]))
    capsys.readouterr()
    assert main(compose_config(overrides)) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if "notice" in line]
    assert notices == [
        f"notice: rebuilding the data cache {key.parent}: key.json does not hold a digest per"
        " split (damaged, or an older format)"
    ]
    assert "Traceback" not in err and "digests" in json.loads(key.read_text())


# --- a Pathfinder release reads nothing outside its folder ----------------------------------------


@pytest.mark.parametrize("how", ["climbing", "absolute", "symlink"])
def test_release_paths_leaving_the_folder_are_one_line(capsys, smoke_overrides, tmp_path, how):
    write_release(tmp_path / "release", n=29, empty=())
    folder = tmp_path / "release" / "pathfinder32" / "curv_contour_length_14"
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.new("L", (32, 32), 200).save(secret)
    meta = folder / "metadata" / "0.npy"
    lines = meta.read_text().splitlines(keepends=True)
    batch = {"climbing": "imgs/../../../../outside", "absolute": str(secret.parent)}.get(how)
    if batch:
        lines[2] = f"{batch} secret.png 2 0 1.0 14 4 2 0.5 1 1\n"
        meta.write_text("".join(lines))
    else:
        (folder / "imgs" / "0" / "sample_2.png").unlink()
        (folder / "imgs" / "0" / "sample_2.png").symlink_to(secret)
    before = meta.read_bytes()
    release = ["task=pathfinder", "data.source=release", f"data.root={tmp_path / 'release'}"]
    err = failing(capsys, [*smoke_overrides, f"paths.cache_dir={tmp_path / 'cache'}", *release])
    assert err.startswith(f"error: {meta}:3: ") and "secret" in err
    assert ("leaves the release folder" if batch else "outside the release folder") in err
    assert meta.read_bytes() == before and not (tmp_path / "leaderboard.csv").exists()
    assert not list((tmp_path / "cache").rglob("*.arrow"))


# --- settings torch would only reject later (or never) --------------------------------------------

IMPOSSIBLE_MODEL = ["model.dim=1048576", "model.ffn_dim=1048576", "model.num_heads=1"]


@pytest.mark.parametrize(
    "overrides, start",
    [
        (["trainer.lr=nan"], "trainer.lr=nan: must be a finite number"),
        (["trainer.lr=inf"], "trainer.lr=inf: must be a finite number"),
        (["trainer.weight_decay=nan"], "trainer.weight_decay=nan: must be a finite number"),
        (["trainer.eps=-1"], "trainer.eps=-1.0: must be > 0"),
        (["trainer.betas=[2,3]"], "trainer.betas=[2.0, 3.0]: each value must be in [0, 1)"),
        (["trainer.device=tpu"], "trainer.device='tpu': choose auto, cpu, cuda or cuda:N"),
        (["trainer.clip_value=nan"], "trainer.clip_value=nan: must be a finite number"),
        (IMPOSSIBLE_MODEL, "model.dim=1048576, model.ffn_dim=1048576, model.num_layers=2: "),
    ],
)
def test_bad_trainer_and_model_values_stop_before_anything_is_written(
    capsys, smoke_overrides, tmp_path, overrides, start
):
    cache = tmp_path / "own-cache"
    err = failing(capsys, [*smoke_overrides, f"paths.cache_dir={cache}", *overrides])
    assert err.startswith(f"error: invalid setting {start}")
    assert not (tmp_path / "run").exists() and not cache.exists()


# --- a rank that dies or stops --------------------------------------------------------------------

RANK_SCRIPT = """
import sys, time
from pathlib import Path
from lra_bench.distributed import all_sum, init_distributed, peer_failures, shutdown
from lra_bench.errors import LraBenchError

go, timeout = Path(sys.argv[1]), float(sys.argv[2])
print("imported", flush=True)
while not go.exists():
    time.sleep(0.02)
try:
    with peer_failures(timeout):  # as lra_bench.train.run and main use them
        info, device = init_distributed("cpu", timeout)
        print("joined", flush=True)
        try:
            while True:
                all_sum([1.0], info, device)
                time.sleep(0.01)
        finally:
            shutdown(info)
except LraBenchError as err:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(tmp_path, timeout: float) -> list[subprocess.Popen]:
    """Two gloo ranks exchanging sums until one of them is stopped or killed."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    env.update(WORLD_SIZE="2", OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    go = tmp_path / "go"
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(go), str(timeout)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    for rank in ranks:  # imports can take long on a busy machine; the rendezvous should not
        assert rank.stdout.readline().strip() == "imported"
    go.touch()
    for rank in ranks:
        assert rank.stdout.readline().strip() == "joined"
    return ranks


@pytest.mark.parametrize(
    "victim, how",
    [
        pytest.param(1, signal.SIGSTOP, marks=pytest.mark.slow, id="rank1-stopped"),
        pytest.param(1, signal.SIGKILL, id="rank1-killed"),
        pytest.param(0, signal.SIGKILL, id="rank0-killed"),
    ],
)
@pytest.mark.slow
def test_a_stopped_or_killed_rank_ends_the_job_within_the_timeout(tmp_path, victim, how):
    timeout = 5.0
    ranks = start_ranks(tmp_path, timeout)
    survivor = ranks[1 - victim]
    try:
        time.sleep(0.5)
        os.kill(ranks[victim].pid, how)
        stopped = time.monotonic()
        _, err = survivor.communicate(timeout=60)
        elapsed = time.monotonic() - stopped
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
            rank.communicate()
    assert survivor.returncode == 2 and elapsed < timeout + 5, (elapsed, err)
    if victim == 1:  # rank 0 survives: one line
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert err.startswith(
            "error: another of the 2 ranks died or did not answer within"
            " trainer.dist_timeout_s=5 s ("
        )
    else:  # another rank survives: quiet, rank 0's log speaks for the job
        assert err == ""


# --- a plugin that exits on import ----------------------------------------------------------------


@pytest.mark.slow
def test_a_plugin_calling_sys_exit_on_import_is_one_warning(tmp_path):
    site = tmp_path / "site"
    fake_install(site, "exiting-attn", {"exiting": "exiting_mod"}, {"exiting_mod": EXITING})
    done = cli(["-m", "lra_bench", "--help"], tmp_path, site)
    assert done.returncode == 0, done.stderr
    assert "attn: " in done.stdout and "exiting" not in done.stdout
    assert done.stderr.splitlines() == [
        "warning: attention plugin exiting-attn (entry point exiting = exiting_mod) not loaded"
        " (it called sys.exit(3) on import); the other attentions are unaffected"
    ]


EXITING = "import sys\nsys.exit(3)\n"


@pytest.fixture
def fresh_discovery(tmp_path, monkeypatch):
    """Plugin discovery run again, in this process, over entry points the test names."""
    from lra_bench.attention import registry

    monkeypatch.setitem(registry._discovery, "done", False)
    monkeypatch.setattr(registry, "BROKEN", {})
    monkeypatch.syspath_prepend(str(tmp_path))

    def install(modules: dict[str, str]) -> None:
        for name, text in modules.items():
            (tmp_path / f"{name}.py").write_text(text)
        points = [EntryPoint(name, name, registry.GROUP) for name in modules]
        monkeypatch.setattr(registry, "entry_points", lambda group: points)

    return install


def test_sys_exit_in_a_plugin_is_reported_and_skipped(fresh_discovery, capsys):
    from lra_bench.attention import registry

    fresh_discovery({"exits_zero": "raise SystemExit(0)\n", "exits_three": EXITING})
    registry.discover_plugins()
    assert registry.BROKEN == {
        "exits_three": "it called sys.exit(3) on import",
        "exits_zero": "it called sys.exit(0) on import",
    }
    assert len(capsys.readouterr().err.splitlines()) == 2


def test_ctrl_c_while_a_plugin_imports_still_stops(fresh_discovery):
    from lra_bench.attention import registry

    fresh_discovery({"interrupted": "raise KeyboardInterrupt\n"})
    with pytest.raises(KeyboardInterrupt):
        registry.discover_plugins()
