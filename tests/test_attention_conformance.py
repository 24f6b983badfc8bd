"""Every registered attention passes the conformance kit
(``lra_bench.testing``), and the kit catches broken ones."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from attention_cases import SMALL
from lra_bench.attention import Attention, AttentionConfig, SampledAttention, available
from lra_bench.attention.base import key_padding_bias
from lra_bench.compose import compose_config
from lra_bench.errors import ConformanceError
from lra_bench.testing import CHECKS, TASK_LENGTHS, check_attention

# values each variant's settings must refuse, naming the
# key (beyond the kit's own: an unknown key, dropout=1.5)
INVALID = {
    "softmax": [("impl", "flash")],
    "skyformer": [
        ("num_landmarks", 0),
        ("num_landmarks", 10_000),
        ("gamma", -1.0),
        ("impl", "slow"),
        ("pinv_init", "global"),
    ],
    "nystromformer": [
        ("num_landmarks", 0),
        ("num_landmarks", 10_000),
        ("conv_kernel", 4),
        ("pinv_iters", 0),
        ("dropout", 0.1),
        ("impl", "slow"),
        ("pinv_init", "global"),
    ],
    "linformer": [("proj_dim", 0), ("proj_dim", 10_000)],
    "performer": [
        ("num_features", 0),
        ("redraw", "sometimes"),
        ("eps", -1.0),
        ("score_scale", "inv_sqrt"),
        ("padded_keys", "dropped"),
        ("stabilizer", "per_batch"),
        ("impl", "slow"),
    ],
    "reformer": [("num_hashes", 0), ("chunk_size", 0), ("chunk_size", 10_000), ("num_buckets", 3)],
    "bigbird": [
        ("block_size", 0),
        ("block_size", 10_000),
        ("window_blocks", 2),
        ("num_random_blocks", -1),
    ],
    "informer": [("factor", 0)],
    "linear": [("dropout", 0.1), ("eps", -1.0)],
    "local": [("block_size", 0), ("block_size", 10_000)],
    "longformer": [("window", -1), ("window", 10_000)],
    "sparse": [("stride", 0), ("stride", 10_000), ("summary", 17), ("summary", -1)],
    "sinkhorn": [("block_size", 0), ("sinkhorn_iters", 0), ("temperature", 0.0), ("pool", "max")],
}


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", available())
def test_registered_attention_conforms(name, check):
    check_attention(name, checks=[check], invalid=INVALID.get(name, ()), **SMALL.get(name, {}))


def test_task_lengths_are_the_tasks_own():
    for task, n in TASK_LENGTHS.items():
        assert compose_config([f"task={task}"]).task.max_len == n


# --- negative controls: broken attentions ---------------------------------------------------------


@dataclass
class BrokenConfig(AttentionConfig):
    name: str = "broken"
    window: int = 4  # accepted whatever its value: no rule in check()


class Leaky(Attention):
    """Softmax that ignores the mask: padded keys reach real tokens."""

    Config = BrokenConfig

    def forward(self, q, k, v, mask=None):
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


class Masked(Attention):
    Config = BrokenConfig

    def forward(self, q, k, v, mask=None):
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        bias = key_padding_bias(mask, scores.dtype)
        return torch.softmax(scores if bias is None else scores + bias, dim=-1) @ v


class Noisy(Masked):
    """Adds fresh global-RNG noise on every call, eval mode included."""

    def forward(self, q, k, v, mask=None):
        return super().forward(q, k, v, mask) + 1e-3 * torch.randn_like(q)


class Forgetful(SampledAttention):
    """Draws in training from a generator that the state dict does not hold."""

    Config = BrokenConfig

    def __init__(self, cfg, **kw):
        super().__init__(cfg, **kw)
        self.own = torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,))))

    def get_extra_state(self):
        return torch.zeros(1)

    def set_extra_state(self, state):
        pass

    def forward(self, q, k, v, mask=None):
        noise = torch.rand(
            1, generator=self.own if self.training else self.generator(), dtype=q.dtype
        )
        return Masked.forward(self, q, k, v, mask) * (1 + 1e-3 * noise)


class KeyBlind(Masked):
    """Ignores k but claims to use it."""

    def forward(self, q, k, v, mask=None):
        return super().forward(q, q, v, mask)


class HalfPrecision(Masked):
    """Returns float32 for bf16 inputs."""

    def forward(self, q, k, v, mask=None):
        return super().forward(q.float(), k.float(), v.float(), mask)


class Reads(Masked):
    """Reads the real tokens' count back (a GPU's host waits for it every call)."""

    def forward(self, q, k, v, mask=None):
        real = int(mask.sum()) if mask is not None else q.shape[2]
        return super().forward(q, k, v, mask) * (real / max(real, 1))


class Picks(Masked):
    """Picks the real tokens' rows by the mask (an output sized by the data)."""

    def forward(self, q, k, v, mask=None):
        out = super().forward(q, k, v, mask)
        if mask is not None:
            out = out.clone()
            out[:, :, ~mask[0]] = 0.0 * out[:, :, ~mask[0]]
        return out


class WritesANumber(Masked):
    """Writes a Python number into one element of a device tensor (a copy from host memory)."""

    def forward(self, q, k, v, mask=None):
        one = torch.zeros(1, dtype=q.dtype, device=q.device)
        one[0] = 1.0
        return super().forward(q, k, v, mask) * one


@pytest.mark.parametrize(
    "module, check, message",
    [
        (Reads, "no_host_wait", "check 'no_host_wait' failed: _local_scalar_dense.default at "),
        (Picks, "no_host_wait", "check 'no_host_wait' failed: index.Tensor at "),
        (WritesANumber, "no_host_wait", "check 'no_host_wait' failed: copy_.default at "),
        (Leaky, "padding", "check 'padding' failed: padded keys change real tokens' outputs"),
        (
            Noisy,
            "determinism",
            "check 'determinism' failed: two eval-mode calls on the same inputs differ",
        ),
        (
            Forgetful,
            "resume",
            "check 'resume' failed: a module restored from the state dict computes another "
            "training step",
        ),
        (
            KeyBlind,
            "gradients",
            "check 'gradients' failed: k gets no finite non-zero gradient (set uses_keys = False",
        ),
        (HalfPrecision, "bf16", "check 'bf16' failed: bf16 inputs gave torch.float32 outputs"),
    ],
)
def test_the_kit_catches_a_broken_attention_with_one_clear_line(module, check, message):
    with pytest.raises(ConformanceError) as caught:
        check_attention(module, checks=[check])
    text = str(caught.value)
    assert text.startswith(f"attention {module.__qualname__!r}: {message}") and "\n" not in text
    with pytest.raises(ConformanceError):
        check_attention(module)  # every check


def test_the_kit_catches_a_setting_without_a_rule():
    with pytest.raises(
        ConformanceError,
        match=(
            r"check 'config' failed: window=-1 is accepted; its check\(\) should raise "
            r"ValueError\('window: <rule>'\)"
        ),
    ):
        check_attention(Masked, checks=["config"], invalid=[("window", -1)])


def test_the_kit_passes_a_correct_attention_and_refuses_unknown_checks():
    check_attention(
        Masked,
        checks=[
            "config",
            "shape_dtype",
            "padding",
            "gradients",
            "determinism",
            "resume",
            "bf16",
            "no_host_wait",
        ],
    )
    with pytest.raises(ConformanceError, match="unknown check 'speed'"):
        check_attention(Masked, checks=["speed"])
    with pytest.raises(ConformanceError, match="attention 'nope' is not registered"):
        check_attention("nope")


def test_every_registered_attention_has_test_settings():
    """A new variant gets small and tiny test settings (or a stated home elsewhere), so the
    suites parametrised over the registry cannot skip it silently."""
    from attention_cases import TESTED_ELSEWHERE, TINY

    needing = set(available()) - set(TESTED_ELSEWHERE)
    assert needing - set(SMALL) == set(), "add small settings in tests/attention_cases.py"
    assert needing - set(TINY) == set(), "add tiny settings in tests/attention_cases.py"
