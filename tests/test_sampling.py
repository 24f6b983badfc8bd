"""Random draws on the tensors' device: same draws as a
host generator on the CPU, no host sync in forward."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attention_cases import SMALL, rand_qkv
from lra_bench.attention import build_attention
from lra_bench.attention.base import SampledAttention
from lra_bench.attention.registry import REGISTRY, available
from lra_bench.attention.sampling import DeviceGenerators, seeded_generator, uniform_indices

# operations that read a device tensor back to the host (or size an output by its values)
HOST_READS = {
    "_local_scalar_dense",
    "bincount",
    "nonzero",
    "masked_select",
    "_unique2",
    "unique_dim",
    "unique_consecutive",
}


class HostReads(TorchDispatchMode):
    """Records every aten operation that would synchronise a GPU stream with the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func._schema.name.split("::")[-1] in HOST_READS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def test_uniform_indices_match_a_host_draw_on_the_cpu():
    lengths = torch.tensor([7, 100, 1])
    idx = uniform_indices(lengths, (2, 50), seeded_generator(3))
    u = torch.rand((3, 2, 50), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = torch.minimum(
        (u * lengths.double().view(-1, 1, 1)).long(), lengths.view(-1, 1, 1) - 1
    )
    assert torch.equal(idx, expected)
    assert ((idx >= 0) & (idx < lengths.view(-1, 1, 1))).all()


def test_device_generators_round_trip_and_keep_states_of_unused_devices():
    gens = DeviceGenerators(11)
    first = torch.rand(4, generator=gens.get("cpu"))
    assert torch.equal(first, torch.rand(4, generator=torch.Generator().manual_seed(11)))
    saved = gens.state()
    ahead = torch.rand(4, generator=gens.get("cpu"))
    restored = DeviceGenerators(99)
    restored.load(
        {**saved, "cuda": torch.zeros(3, dtype=torch.uint8)}
    )  # a GPU run's state, read on a CPU machine
    assert torch.equal(torch.rand(4, generator=restored.get("cpu")), ahead)
    assert set(restored.state()) == {"cpu", "cuda"}  # kept for a later save, not dropped


def test_older_checkpoints_with_a_bare_cpu_state_still_load():
    attn = build_attention(
        {"name": "skyformer", "num_landmarks": 8}, head_dim=8, num_heads=2, max_len=64
    )
    old = torch.Generator().manual_seed(5).get_state()
    attn.set_extra_state(old)
    assert torch.equal(attn.generator().get_state(), old)


@pytest.mark.parametrize("name", available())
def test_forward_reads_nothing_back_to_the_host(name, monkeypatch):
    torch.manual_seed(0)
    attn = build_attention(
        {"name": name, "dropout": 0.0, **SMALL.get(name, {})}, head_dim=8, num_heads=2, max_len=128
    )
    q, k, v = (x.float().requires_grad_() for x in rand_qkv(0, n=96))
    mask = torch.ones(2, 96, dtype=torch.bool)
    mask[1, 50:] = False
    called: list[str] = []
    for method in ("cpu", "item", "tolist", "numpy"):
        original = getattr(torch.Tensor, method)
        monkeypatch.setattr(
            torch.Tensor,
            method,
            lambda self, *a, _m=method, _o=original, **kw: called.append(_m) or _o(self, *a, **kw),
        )
    for training in (True, False):
        attn.train(training)
        with HostReads() as reads:
            out = attn(q, k, v, mask)
            if training:
                out.sum().backward()
        assert reads.seen == [] and called == [], f"{name}: host reads {reads.seen + called}"


@pytest.mark.parametrize(
    "name", [n for n in available() if issubclass(REGISTRY[n].module, SampledAttention)]
)
def test_training_draws_resume_from_the_state_dict(name):
    torch.manual_seed(0)

    def make():
        return (
            build_attention(
                {"name": name, **SMALL.get(name, {})}, head_dim=8, num_heads=2, max_len=128
            )
            .double()
            .train()
        )

    a = make()
    q, k, v = rand_qkv(1, n=64)
    a(q, k, v)
    saved = a.state_dict()
    expected = a(q, k, v)
    b = make()
    b.load_state_dict(saved)
    assert torch.equal(b(q, k, v), expected)
