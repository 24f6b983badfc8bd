"""The run's time estimate from its first measured steps, and again after the first evaluation."""

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
    est = RunEstimate(0, 50_000, 500, "cpu-2t", said.append, clock=lambda: clock[0])
    ticks(est, clock, [24.0 + 3.6 * i for i in range(30)])  # a slow first step, then 3.6 s
    assert len(said) == 1  # after 60 s: 17 steps, fewer than MIN_STEPS
    assert said[0].startswith(
        "estimate: 49,982 steps left at 3.6 s/step on cpu-2t = about 2.1 days"
    )
    assert "plus 100 dev evaluations (re-estimated after the first)" in said[0]
    assert "experiment=cpu_demo" in said[0]


def test_re_estimated_after_the_first_evaluation_with_everything_the_loop_does():
    """1 s steps, then a 50 s evaluation at step 100: the second line's rate counts it."""
    said: list[str] = []
    clock = [0.0]
    est = RunEstimate(0, 1000, 100, "cpu-1t", said.append, clock=lambda: clock[0])
    times = [5.0 + step + 50.0 * (step > 100) for step in range(1, 200)]
    ticks(est, clock, times)
    assert said == [
        "estimate: 979 steps left at 1 s/step on cpu-1t = about 16 min of training"
        " plus 10 dev evaluations (re-estimated after the first)",
        "estimate at step 101: 899 steps left at 1.5 s/step on cpu-1t, data, evaluation and"
        " checkpoints included = about 22 min",
    ]


def test_a_resumed_run_is_re_estimated_after_its_next_evaluation():
    said: list[str] = []
    clock = [0.0]
    est = RunEstimate(250, 1000, 100, "cpu-1t", said.append, clock=lambda: clock[0])
    for step in range(251, 310):
        clock[0] = 2.0 * step
        est.tick(step)
    assert [line.split(":")[0] for line in said] == ["estimate", "estimate at step 301"]
    assert "750 steps left" not in said[0] and "plus 8 dev evaluations" in said[0]


def test_a_short_or_gpu_run_gets_no_pointer_and_a_finished_one_no_line():
    said: list[str] = []
    clock = [0.0]
    gpu = RunEstimate(0, 50_000, 100_000, "NVIDIA H200", said.append, clock=lambda: clock[0])
    ticks(gpu, clock, [5.0 + 0.5 * i for i in range(60)])
    assert said == [  # after 20 s: 40 steps
        "estimate: 49,959 steps left at 0.5 s/step on NVIDIA H200 = about 6.9 h of training"
    ]
    done = RunEstimate(6, 6, 2, "cpu-1t", said.append, clock=lambda: clock[0])
    done.tick(7)
    assert len(said) == 1


def test_durations():
    assert [duration(s) for s in (42, 720, 3.4 * 3600, 3 * 86400)] == [
        "42 s", "12 min", "3.4 h", "3.0 days",
    ]  # fmt: skip


def test_a_run_prints_its_estimate_once(smoke_overrides, capsys, monkeypatch):
    """Evaluated at step 3 of 8: the estimate after it (step 4) is the only one, and counts it."""
    import lra_bench.estimate

    monkeypatch.setattr(lra_bench.estimate, "MIN_SECONDS", 0.0)
    monkeypatch.setattr(lra_bench.estimate, "MIN_STEPS", 3)  # due after 1 + 3 steps
    run(compose_config([*smoke_overrides, "trainer.steps=8"]))
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("estimate")]
    assert len(lines) == 1 and lines[0].startswith("estimate at step 4: 4 steps left at ")
    assert "on cpu-1t, data, evaluation and checkpoints included" in lines[0]
