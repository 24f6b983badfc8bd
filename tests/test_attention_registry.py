"""The attention registry: each name's settings and implementation agree, settings import no
torch, and sampling variants built from their composed configs draw afresh in training.

The properties every variant shares (padding, settings, determinism, task shapes) are checked
by the conformance kit in test_attention_conformance.py.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lra_bench.attention import (
    REGISTRY,
    Attention,
    SampledAttention,
    available,
    build_attention,
    make_config,
)
from lra_bench.attention.registry import class_path, settings_class
from lra_bench.compose import compose_config

SRC = Path(__file__).resolve().parents[1] / "src"

COMPOSED = {
    name: make_config(compose_config([f"attn={name}"]).attn) for name in available()
}  # attn=<name>, typed


def from_config(name: str, max_len: int) -> torch.nn.Module:
    return build_attention(
        dataclasses.replace(COMPOSED[name]), head_dim=32, num_heads=2, max_len=max_len
    )  # a copy: tests may edit it


def rand_qkv(n: int = 1024) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(2, 2, n, 32, generator=g) for _ in range(3)]


@pytest.mark.parametrize(
    "name", [n for n in available() if issubclass(from_config(n, 1024).__class__, SampledAttention)]
)
def test_training_draws_differ_between_calls(name):
    attn = from_config(name, 1024).train()
    if hasattr(attn.cfg, "dropout"):
        attn.cfg.dropout = 0.0  # only the draws may differ
    q, k, v = rand_qkv()
    assert not torch.allclose(attn(q, k, v), attn(q, k, v))


def test_every_sampling_variant_is_covered():
    sampled = {n for n in available() if isinstance(from_config(n, 1024), SampledAttention)}
    assert {"skyformer", "performer", "reformer", "bigbird", "informer"} <= sampled


@pytest.mark.parametrize("name", [*available(), "custom"])
def test_each_name_is_implemented_by_the_class_its_settings_name(name):
    entry = REGISTRY[name]
    module_name = entry.target.partition(":")[0]
    assert (
        entry.config.__module__ == f"lra_bench.attention.settings.{module_name.rpartition('.')[2]}"
    )
    assert issubclass(entry.module, Attention) and class_path(entry.module) == entry.target
    assert settings_class(entry.module) is entry.config and entry.config().name == name


def test_the_registry_and_every_settings_module_import_no_torch(tmp_path):
    """Listing the variants and typing every one's default settings leave torch unimported."""
    code = (
        "import sys\n"
        "from lra_bench.attention import REGISTRY, available, make_config\n"
        "typed = [make_config({'name': n}) for n in available()]\n"
        "assert len(typed) == len(available()) > 10 and 'skyformer' in REGISTRY\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
