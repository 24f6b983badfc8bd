"""Mixed precision, deterministic mode, and the parameters DDP reduces, checked on the CPU."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from attention_cases import SMALL
from lra_bench.attention import available, build_attention
from lra_bench.attention.base import hidden_score, matmul_dtype, upcast
from lra_bench.compose import compose_config
from lra_bench.data.batches import Collator
from lra_bench.model import build_model
from lra_bench.runtime import CUBLAS_WORKSPACE, deterministic_mode, native_bf16, precision_of
from lra_bench.step import make_train_state, train_step


def model_for(attn: str, *overrides: str) -> torch.nn.Module:
    small = [
        f"attn.{key}={value}"
        for key, value in {**SMALL, "skyformer": {"num_landmarks": 16}}.get(attn, {}).items()
    ]
    torch.manual_seed(0)
    return build_model(compose_config([f"attn={attn}", "task.max_len=64", *small, *overrides]))


def padded_batch() -> dict[str, torch.Tensor | None]:
    ids = [[3 + i % 10 for i in range(64)], [4 + i % 9 for i in range(37)]]  # the second is padded
    return Collator(64, "max_len", mask_zero=False, dual=False)({"input_ids": ids, "label": [0, 1]})


@pytest.mark.parametrize("attn", available())
def test_fp16_autocast_without_fp32_attention_is_finite(attn):
    model = model_for(attn, "model.attn_fp32=false", "model.dropout=0")
    seen: list[torch.dtype] = []
    attention = model.encoder.blocks[0].attn.attention
    attention.register_forward_hook(lambda mod, inputs, out: seen.append(inputs[0].dtype))
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(padded_batch())
        loss = torch.nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1]))
    loss.backward()
    assert seen[0] == torch.float16  # the attention really ran on fp16 inputs
    assert torch.isfinite(logits).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("attn", available())
def test_every_parameter_gets_a_gradient(attn):
    """What lets DDP run without searching for unused parameters (shared-QK Reformer included)."""
    model = model_for(attn, "model.dropout=0")
    torch.nn.functional.cross_entropy(model(padded_batch()), torch.tensor([0, 1])).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []


def grads_after_autocast_forward(attn: str, backward_inside: bool) -> list[torch.Tensor]:
    """q's and v's gradients after a bf16 autocast forward of ``attn``, backward called inside
    the autocast block or after it."""
    torch.manual_seed(0)
    model = build_attention(
        {"name": attn, "dropout": 0.0, **SMALL.get(attn, {})}, head_dim=8, num_heads=2, max_len=128
    ).train()
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 100, 8, generator=g, requires_grad=True) for _ in range(3))
    mask = torch.arange(100) < torch.tensor([[100], [60]])
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(q, k, v, mask).float().square().sum()
        if backward_inside:
            loss.backward()
    if not backward_inside:
        loss.backward()
    return [q.grad, v.grad]


@pytest.mark.parametrize("attn", available())
def test_backward_called_under_autocast_gives_the_same_gradients(attn):
    """Custom backward passes run with autocast off, as their forward passes did: called under
    autocast they neither fail on mixed dtypes nor recompute in bf16 (Performer's and Skyformer's
    gradients moved by up to 0.5 and 1.2 that way, and Nystromformer's backward failed)."""
    inside, after = (grads_after_autocast_forward(attn, inside) for inside in (True, False))
    assert all(torch.equal(a, b) for a, b in zip(inside, after, strict=True))


def test_the_training_step_runs_backward_outside_autocast():
    """torch advises autocast around forward and loss only; a backward inside it ran custom
    recomputations in bf16."""
    cfg = compose_config(["attn=softmax", "trainer=smoke", "trainer.amp=true"])
    cfg.trainer.amp_dtype = "bf16"
    model = build_model(cfg)
    state = make_train_state(model, cfg.trainer, torch.device("cpu"))
    assert state.amp_dtype == torch.bfloat16  # autocast is on for the forward pass
    seen: list[bool] = []
    model.head.register_full_backward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    train_step(state, iter([padded_batch()]))
    assert seen == [False]


def test_hidden_scores_fit_the_dtype_and_vanish_after_softmax():
    assert hidden_score(torch.float32) == -1e9 and hidden_score(torch.bfloat16) == -1e9
    low = hidden_score(torch.float16)
    assert torch.isfinite(torch.tensor(low, dtype=torch.float16)) and torch.isfinite(
        torch.tensor(low - 30000, dtype=torch.float16)
    )
    scores = torch.tensor([-20.0, low], dtype=torch.float16)
    assert torch.softmax(scores.float(), 0)[1] == 0.0
    x = torch.zeros(2)
    with torch.autocast("cpu", dtype=torch.float16):
        assert matmul_dtype(x) == torch.float16
    assert matmul_dtype(x) == torch.float32


def test_emulated_bf16_gpus_train_in_fp16(monkeypatch):
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation
    )  # a V100
    assert not native_bf16(torch.device("cuda"))
    assert precision_of(True, torch.device("cuda")) == ("fp16-amp", torch.float16)
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: True
    )  # an A100
    assert precision_of(True, torch.device("cuda")) == ("bf16-amp", torch.bfloat16)
    assert precision_of(True, torch.device("cpu")) == ("bf16-amp", torch.bfloat16)
    assert precision_of(False, torch.device("cuda")) == ("fp32", None)


def test_deterministic_mode_is_strict_and_restores_the_previous_settings(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic_mode(True):
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert (
            torch.are_deterministic_algorithms_enabled()
            and not torch.is_deterministic_algorithms_warn_only_enabled()
        )
        assert not torch.backends.cuda.cudnn_sdp_enabled() and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() == before
    assert torch.backends.cuda.cudnn_sdp_enabled()
    with deterministic_mode(False):
        assert torch.are_deterministic_algorithms_enabled() == before


def test_upcast_lifts_half_types_only():
    x16, xb, x32, x64 = (
        torch.ones(2, dtype=t)
        for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
    )
    out = upcast(x16, xb, x32, x64)
    assert [t.dtype for t in out] == [torch.float32, torch.float32, torch.float32, torch.float64]
    assert out[2] is x32 and out[3] is x64  # full-precision inputs pass through untouched


def test_attention_package_has_one_half_precision_check():
    """Variants call ``base.upcast``; a second list of half types would drift from it."""
    package = Path(__file__).resolve().parents[1] / "src" / "lra_bench" / "attention"
    pattern = re.compile(r"\(torch\.(float16|bfloat16), torch\.(float16|bfloat16)\)")
    holders = sorted(f.name for f in package.glob("*.py") if pattern.search(f.read_text()))
    assert holders == ["base.py"]
