"""The model's dropout has nn.Dropout's distribution, kept values and gradient; only the random
stream differs. Each statistical check is also shown to reject a wrong form."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lra_bench import dropout as lra_dropout
from lra_bench.attention import softmax_dropout
from lra_bench.compose import compose_config
from lra_bench.dropout import Dropout, dropout, keep_mask, threshold
from lra_bench.model import build_model

N = 1_000_000
SIGMAS = 6.0  # a false failure about once in 5e8 runs

Form = Callable[[torch.Tensor, float], torch.Tensor]


def ours(x: torch.Tensor, p: float) -> torch.Tensor:
    return dropout(x, p, True)


def torch_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p, True)


def unscaled(x: torch.Tensor, p: float) -> torch.Tensor:
    return x * (torch.rand_like(x) >= p)


def off_by_a_percent(x: torch.Tensor, p: float) -> torch.Tensor:
    return dropout(x, p + 0.01, True) * ((1 - p - 0.01) / (1 - p))


def keep_fraction_ok(form: Form, p: float) -> bool:
    """The kept fraction of N elements within SIGMAS binomial deviations of ``1 - p``."""
    kept = int((form(torch.ones(N), p) != 0).sum())
    return abs(kept / N - (1 - p)) <= SIGMAS * math.sqrt(p * (1 - p) / N)


def mean_preserved(form: Form, p: float) -> bool:
    """The mean of dropped ones within SIGMAS deviations of 1: what inverted scaling is for."""
    mean = float(form(torch.ones(N, dtype=torch.float64), p).mean())
    return abs(mean - 1.0) <= SIGMAS * math.sqrt(p / (1 - p) / N)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_keep_fraction_is_binomial(p):
    assert keep_fraction_ok(ours, p) and keep_fraction_ok(torch_dropout, p)
    assert not keep_fraction_ok(off_by_a_percent, p)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_neighbours_are_kept_independently(p):
    keep = dropout(torch.ones(N), p) != 0
    both = float((keep[:-1] & keep[1:]).double().mean())
    assert abs(both - (1 - p) ** 2) <= SIGMAS * math.sqrt((1 - p) ** 2 / (N - 1))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mean_is_preserved_and_would_not_be_without_scaling(p):
    assert mean_preserved(ours, p) and mean_preserved(torch_dropout, p)
    assert not mean_preserved(unscaled, p)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_kept_values_are_nn_dropouts(p, dtype):
    x = torch.randn(100_000, dtype=dtype)
    y, reference = dropout(x, p), F.dropout(x, p, True)
    kept, theirs = y != 0, reference != 0
    assert torch.equal(y[kept], x[kept] * (1 / (1 - p)))
    assert torch.equal(reference[theirs], x[theirs] * (1 / (1 - p)))
    assert torch.equal(y[~kept], torch.zeros_like(y[~kept]))


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(4, 8, 16)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(dropout(x, 0.5, training=False), x)


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_gradient_is_the_scaled_mask(p):
    x = torch.randn(32, 64, 16).add_(10.0).requires_grad_()  # no zeros: y != 0 is the mask
    grad = torch.randn_like(x)
    y = Dropout(p).train()(x)
    y.backward(grad)
    keep = (y != 0).to(x.dtype)
    explicit = x.detach().clone().requires_grad_()
    (explicit * keep * (1 / (1 - p))).backward(grad)
    assert explicit.grad is not None and x.grad is not None
    assert torch.equal(y.detach(), explicit.detach() * keep * (1 / (1 - p)))
    assert torch.equal(x.grad, explicit.grad)


def test_draws_differ_and_torchs_random_state_repeats_them():
    x = torch.ones(10_000)
    torch.manual_seed(3)
    first, second = dropout(x, 0.5), dropout(x, 0.5)
    torch.manual_seed(3)
    again = dropout(x, 0.5)
    state = torch.get_rng_state()
    third = dropout(x, 0.5)
    torch.set_rng_state(state)
    assert not torch.equal(first, second)
    assert torch.equal(first, again) and torch.equal(dropout(x, 0.5), third)


def test_a_generator_seeds_the_mask():
    first = keep_mask((3, 5, 7), 0.5, generator=torch.Generator().manual_seed(1))
    again = keep_mask((3, 5, 7), 0.5, generator=torch.Generator().manual_seed(1))
    other = keep_mask((3, 5, 7), 0.5, generator=torch.Generator().manual_seed(2))
    assert first.dtype == torch.bool and first.shape == (3, 5, 7)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_the_threshold_keeps_one_minus_p_of_the_32_bit_values():
    assert threshold(0.5) == 2**31 and threshold(0.25) == 2**30
    for p in (0.1, 0.2, 0.3, 1e-9):
        assert 0 <= (1 - p) - (1 - threshold(p) / 2**32) < 2**-32


def test_a_transposed_input_of_odd_size_is_dropped_elementwise():
    x = torch.randn(7, 5, 3).add_(10.0).mT  # no zeros, not contiguous, an odd element count
    y = dropout(x, 0.3)
    kept = y != 0
    assert y.shape == x.shape and 0 < int(kept.sum()) < x.numel()
    assert torch.equal(y[kept], x[kept] * (1 / (1 - 0.3)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_other_dtypes_are_nn_dropout_itself(dtype):
    x = torch.randn(1000).to(dtype)
    torch.manual_seed(5)
    expected = F.dropout(x, 0.2, True)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.2), expected)


def test_p_one_drops_everything():
    assert torch.equal(Dropout(1.0).train()(torch.ones(100)), torch.zeros(100))


def test_in_place_is_nn_dropouts():
    x = torch.ones(1000)
    torch.manual_seed(7)
    expected = F.dropout(x.clone(), 0.3, True, inplace=True)
    torch.manual_seed(7)
    y = Dropout(0.3, inplace=True).train()(x)
    assert y is x and torch.equal(x, expected)


def test_the_model_uses_it_everywhere():
    model = build_model(compose_config(["task.max_len=64"]))
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(drops) == 7  # embeddings, then per block: attention output and twice in the FFN
    assert all(isinstance(m, Dropout) for m in drops)


def test_softmax_attention_dropout_draws_its_cpu_masks_the_same_way():
    like = torch.empty(0)
    drawn = softmax_dropout.keep_mask(
        torch.Generator().manual_seed(4), (2, 3, 9), 0.1, slice(0, 9), like
    )
    expected = keep_mask((2, 3, 9), 0.1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(drawn, expected)


def test_drawing_in_chunks_gives_the_bits_of_one_draw(monkeypatch):
    whole = keep_mask((5, 7, 3), 0.5, generator=torch.Generator().manual_seed(6))
    monkeypatch.setattr(lra_dropout, "CHUNK", 8)
    chunked = keep_mask((5, 7, 3), 0.5, generator=torch.Generator().manual_seed(6))
    assert torch.equal(whole, chunked) and 0 < int(whole.sum()) < whole.numel()
