"""Random streams per rank survive a change of world
size; DDP runs the key-less variants (gloo, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lra_bench.attention import build_attention
from lra_bench.checkpoint import rank_rng_states, restore_rng_states
from lra_bench.distributed import DistInfo, seed_dropout_streams, wrap_model
from lra_bench.model import MultiHeadAttention

CPU = torch.device("cpu")
SEED = 7


def _join(rank: int, world: int, store: Path) -> DistInfo:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    return DistInfo(rank, world, rank)


def _save_from_ranks(rank: int, world: int, tmp: str) -> None:
    info = _join(rank, world, Path(tmp) / "store")
    seed_dropout_streams(SEED, info)
    torch.rand(5)  # some dropout draws before the checkpoint
    states = rank_rng_states(info, CPU)
    if info.is_main:
        torch.save(states, Path(tmp) / "rng.pt")
    torch.save(torch.rand(3), Path(tmp) / f"next{rank}.pt")  # what an uninterrupted rank draws next
    _ddp_steps(info)
    dist.destroy_process_group()


def _resume_on_ranks(rank: int, world: int, tmp: str) -> None:
    info = _join(rank, world, Path(tmp) / "store2")
    seed_dropout_streams(SEED, info)
    notice = restore_rng_states(torch.load(Path(tmp) / "rng.pt", weights_only=True), info, CPU)
    torch.save({"draw": torch.rand(3), "notice": notice or ""}, Path(tmp) / f"resumed{rank}.pt")
    dist.destroy_process_group()


def _ddp_steps(info: DistInfo) -> None:
    """Three DDP steps of the attention layers of the
    key-less variants (their k projection unused)."""
    for name in ("reformer", "synthesizer"):
        torch.manual_seed(0)
        attn = build_attention(
            {"name": name, "chunk_size": 8} if name == "reformer" else {"name": name},
            head_dim=8,
            num_heads=2,
            max_len=32,
        )
        layer = wrap_model(MultiHeadAttention(16, 2, attn, dropout=0.0, attn_fp32=True), info, CPU)
        x = torch.randn(2, 32, 16)
        for _ in range(
            3
        ):  # DDP without the unused-parameter search fails on the step after one goes unused
            layer(x, None).sum().backward()


@pytest.mark.slow  # the reverse change of world size below stays in the quick loop
def test_two_ranks_checkpoint_resumes_on_one(tmp_path):
    """(The two ranks also train the key-less variants under DDP, see ``_ddp_steps``.)"""
    mp.spawn(_save_from_ranks, args=(2, str(tmp_path)), nprocs=2)
    saved = torch.load(tmp_path / "rng.pt", weights_only=True)
    assert saved["world_size"] == 2 and len(saved["ranks"]) == 2
    assert not torch.equal(
        torch.load(tmp_path / "next0.pt"), torch.load(tmp_path / "next1.pt")
    )  # seed + rank
    notice = restore_rng_states(saved, DistInfo(), CPU)
    assert torch.equal(torch.rand(3), torch.load(tmp_path / "next0.pt"))
    assert notice is not None and "2 rank(s), resuming on 1" in notice


@pytest.mark.slow
def test_one_rank_checkpoint_resumes_on_two(tmp_path):
    torch.manual_seed(SEED)
    torch.rand(5)
    torch.save(rank_rng_states(DistInfo(), CPU), tmp_path / "rng.pt")
    expected_rank0 = torch.rand(3)
    mp.spawn(_resume_on_ranks, args=(2, str(tmp_path)), nprocs=2)
    rank0, rank1 = (torch.load(tmp_path / f"resumed{r}.pt") for r in (0, 1))
    assert torch.equal(rank0["draw"], expected_rank0)
    torch.manual_seed(SEED + 1)
    assert torch.equal(rank1["draw"], torch.rand(3))  # no saved stream: its own fresh one
    assert "1 rank(s), resuming on 2" in rank0["notice"]


def test_older_single_state_checkpoints_still_restore():
    torch.manual_seed(3)
    old = {"torch": torch.get_rng_state()}
    expected = torch.rand(2)
    assert restore_rng_states(old, DistInfo(), CPU) is None
    assert torch.equal(torch.rand(2), expected)
