"""The model's parameter count from its settings alone, and the refusal of a model too large."""

from __future__ import annotations

import pytest

from lra_bench import model_size
from lra_bench.attention import available
from lra_bench.compose import compose_config
from lra_bench.config import ConfigError, validate
from lra_bench.model import build_model

SHAPES = [
    [],
    ["model.pooling=cls"],
    ["model.positions=sinusoidal", "model.attn_bias=false", "model.qkv_dim=32"],
    ["model.dual_head=lra", "model.classifier_dim=6", "model.num_layers=3"],
]


def built_count(cfg) -> int:
    return sum(p.numel() for p in build_model(cfg).parameters())


@pytest.mark.parametrize("task", ["listops", "retrieval", "image"])
@pytest.mark.parametrize("shape", SHAPES)
def test_count_equals_the_built_softmax_model(task, shape):
    cfg = compose_config([f"task={task}", "attn=softmax", *shape])
    assert model_size.parameter_count(cfg.model, cfg.task) == built_count(cfg)


@pytest.mark.parametrize("attn", available())
def test_count_is_a_lower_bound_for_every_attention(attn):
    cfg = compose_config(["task=listops", f"attn={attn}"])
    assert model_size.parameter_count(cfg.model, cfg.task) <= built_count(cfg)


def test_an_impossible_model_is_refused_before_it_is_built(monkeypatch):
    monkeypatch.setattr(model_size, "device_memory", lambda name: (64 * 2**30, "64 GiB"))
    overrides = ["model.dim=1048576", "model.ffn_dim=1048576", "model.num_heads=1"]
    with pytest.raises(ConfigError) as err:
        validate(compose_config([*overrides, "trainer.device=cpu"]))
    message = str(err.value)
    assert "\n" not in message and message.startswith("invalid setting model.dim=1048576, ")
    assert "at least 13,196,462,130,570 parameters" in message and "more than 64 GiB" in message


def test_the_memory_compared_with_is_the_devices(monkeypatch):
    cfg = compose_config(["model.dim=8192", "model.ffn_dim=8192", "model.num_heads=8"])
    needed = model_size.parameter_count(cfg.model, cfg.task) * model_size.TRAINING_BYTES
    assert needed > model_size.ALWAYS_FITS  # about 10 GiB: the device is asked
    asked = []

    def memory(name: str) -> tuple[int, str]:
        asked.append(name)
        return available, "the test's memory"

    monkeypatch.setattr(model_size, "device_memory", memory)
    available = needed
    assert model_size.too_large(cfg.model, cfg.task, "cuda:0") is None
    available = needed - 1
    assert "more than the test's memory" in model_size.too_large(cfg.model, cfg.task, "cuda:0")
    assert asked == ["cuda:0", "cuda:0"]
    small = compose_config([])
    assert model_size.too_large(small.model, small.task, "cpu") is None and len(asked) == 2


def test_cpu_memory_is_what_the_system_reports_available(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:    2048 kB\n")
    monkeypatch.setattr(model_size, "MEMINFO", meminfo)
    assert model_size.device_memory("cpu") == (2048 * 1024, "the 0.0 GiB of RAM available")
