"""Weights & Biases: one switch away, offline mode honoured, the run always finished."""

from __future__ import annotations

import pytest

from lra_bench.compose import compose_config
from lra_bench.train import RunError, run


@pytest.mark.slow
def test_wandb_offline_run_writes_locally(smoke_overrides, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    result = run(compose_config([*smoke_overrides, "logger=wandb"]))
    assert result["status"] == "complete"
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert wandb.run is None  # finish() was called


def test_tracker_finished_even_when_the_run_fails(smoke_overrides, monkeypatch):
    import lra_bench.train as train
    from lra_bench.tracking import Tracker

    finished = []

    class Spy(Tracker):
        def finish(self) -> None:
            finished.append(True)

    monkeypatch.setattr(train, "make_tracker", lambda *a, **k: Spy())
    with pytest.raises(RunError):
        run(
            compose_config(
                [
                    *smoke_overrides,
                    "trainer.lr=1e30",
                    "trainer.clip_value=null",
                    "trainer.warmup_steps=0",
                ]
            )
        )
    assert finished == [True]
