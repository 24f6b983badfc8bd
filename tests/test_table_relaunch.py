"""A relaunched grid skips its complete runs cheaply: the completion record beside a complete
``last.pt`` (checked by hashing the file, not by loading it), and the grid sweeper that composes
only the runs that will train before the launch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lra_bench import checkpoint, run_state
from lra_bench.run_names import grid_rows


def complete_run(folder: Path, digest: str = "abc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {key: {} for key in run_state.RESUME_KEYS}
    state.update(model={"w": torch.arange(64.0)}, progress={"step": 5}, config_hash=digest)
    checkpoint.save_atomic({**state, "complete": False}, folder / "last.pt", keep_previous=True)
    checkpoint.save_atomic({**state, "complete": True}, folder / "last.pt", keep_previous=True)
    (folder / "results.json").write_text(json.dumps({"status": "complete", "test_acc": 0.5}))
    return folder / "last.pt"


def test_a_complete_checkpoint_is_recorded_and_checked_without_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    last = complete_run(tmp_path)
    assert checkpoint.record_of(last).name == "last.complete.json"
    assert checkpoint.verified_complete(last, "abc")
    assert not checkpoint.verified_complete(last, "other")  # another configuration's run

    def no_load(path: Path) -> None:
        raise AssertionError(f"{path} was loaded")

    monkeypatch.setattr(checkpoint, "load", no_load)
    opening = run_state.open_folder(tmp_path, "abc", is_main=True)
    assert opening.finished == {"status": "complete", "test_acc": 0.5} and opening.saved is None


def test_a_changed_byte_or_a_missing_record_falls_back_to_loading(tmp_path: Path) -> None:
    last = complete_run(tmp_path)
    raw = bytearray(last.read_bytes())
    at = raw.find(torch.arange(64.0).numpy().tobytes())
    raw[at + 9] ^= 0x01
    last.write_bytes(bytes(raw))
    assert not checkpoint.verified_complete(last, "abc")
    opening = run_state.open_folder(tmp_path, "abc", is_main=False)  # the full load decides: the
    assert opening.finished is None and opening.saved["complete"] is False  # damaged file is not
    # trusted, the run resumes from last.prev.pt
    fresh = complete_run(tmp_path / "again")
    checkpoint.record_of(fresh).unlink()
    assert not checkpoint.verified_complete(fresh, "abc")
    assert run_state.open_folder(fresh.parent, "abc", is_main=True).saved is not None


def test_a_later_checkpoint_drops_the_record(tmp_path: Path) -> None:
    last = complete_run(tmp_path)
    checkpoint.save_atomic({"progress": {"step": 6}, "config_hash": "abc"}, last)
    assert not checkpoint.record_of(last).exists()


def test_extra_rows_are_added_to_the_preset_rows_once() -> None:
    assert grid_rows("softmax,skyformer", None) == "softmax,skyformer"
    assert grid_rows("softmax,skyformer", "myattn") == "softmax,skyformer,myattn"
    assert grid_rows("softmax,skyformer", ["linear", "softmax", "linear"]) == (
        "softmax,skyformer,linear"
    )


def test_the_sweeper_composes_before_the_launch_only_runs_that_will_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra.types import RunMode

    from lra_bench.table import launch
    from lra_bench.table.grid import _compose, hydra_context, job_overrides

    with hydra_context():
        master = _compose(
            ["experiment=cpu_table", "seed=0", f"paths.runs_dir={tmp_path}"], RunMode.MULTIRUN
        )
    # imported after Hydra has scanned its plugins (which loads the basic sweeper's module anew)
    from hydra_plugins.lra_bench_grid.grid_sweeper import GridSweeper

    jobs = job_overrides(master)
    done = launch.job_folder(master, jobs[1])
    done.mkdir(parents=True)
    (done / "results.json").write_text(json.dumps({"status": "complete"}))
    composed: list[list[str]] = []
    sweeper = GridSweeper(max_batch_size=None, params=None)
    sweeper.config = master
    monkeypatch.setattr(
        "hydra.plugins.sweeper.Sweeper.validate_batch_is_legal",
        lambda self, batch: composed.extend(batch),
    )
    sweeper.validate_batch_is_legal(jobs)
    assert composed == [jobs[0], jobs[2]]
