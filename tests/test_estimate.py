"""The run's time estimate from its first measured steps."""

from __future__ import annotations

from lra_bench.compose import compose_config
from lra_bench.estimate import RunEstimate, duration
from lra_bench.train import run


def ticks(estimate: RunEstimate, clock: list[float], times: list[float]) -> None:
    for step, t in enumerate(times, start=1):
        clock[0] = t
        estimate.tick(step)


def test_one_line_after_the_warm_up_with_the_cpu_demo_pointer_when_long():
    said: list[str] = []
    clock = [0.0]
    est = RunEstimate(0, 50_000, 100, "cpu-2t", said.append, clock=lambda: clock[0])
    ticks(est, clock, [24.0, 27.6, 31.2, 34.8, 38.4, 42.0])  # a slow first step, then 3.6 s
    assert len(said) == 1
    assert said[0].startswith(
        "estimate: 49,996 steps left at 3.6 s/step on cpu-2t = about 2.1 days"
    )
    assert "plus 100 dev evaluations" in said[0] and "experiment=cpu_demo" in said[0]


def test_a_short_or_gpu_run_gets_no_pointer_and_a_finished_one_no_line():
    said: list[str] = []
    clock = [0.0]
    gpu = RunEstimate(0, 50_000, 0, "NVIDIA H200", said.append, clock=lambda: clock[0])
    ticks(gpu, clock, [5.0 + 0.5 * i for i in range(10)])
    assert said == [
        "estimate: 49,995 steps left at 0.5 s/step on NVIDIA H200 = about 6.9 h of training"
    ]
    done = RunEstimate(6, 6, 0, "cpu-1t", said.append, clock=lambda: clock[0])
    done.tick(7)
    assert len(said) == 1


def test_durations():
    assert [duration(s) for s in (42, 720, 3.4 * 3600, 3 * 86400)] == [
        "42 s", "12 min", "3.4 h", "3.0 days",
    ]  # fmt: skip


def test_a_run_prints_its_estimate_once(smoke_overrides, capsys, monkeypatch):
    import lra_bench.estimate

    monkeypatch.setattr(lra_bench.estimate, "MIN_SECONDS", 0.0)  # due after 1 + 3 steps
    run(compose_config([*smoke_overrides, "trainer.steps=8"]))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("estimate: ")]
    assert len(lines) == 1 and "4 steps left at" in lines[0] and "on cpu-1t" in lines[0]
    assert "plus 2 dev evaluations" in lines[0]
