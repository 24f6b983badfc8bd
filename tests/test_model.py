"""The shared model: padding never changes a sequence's
logits; the peers' quirks sit behind switches."""

from __future__ import annotations

import pytest
import torch

from lra_bench.compose import compose_config
from lra_bench.data.batches import Collator, pad_sequences
from lra_bench.model import build_model


def model_for(*overrides: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(compose_config(["task.max_len=64", *overrides])).eval()


@pytest.mark.parametrize("attn", ["softmax", "skyformer"])
def test_padding_does_not_change_logits(attn):
    extra = ["attn.num_landmarks=16"] if attn == "skyformer" else []
    model = model_for(f"attn={attn}", *extra)
    seqs = [[3, 5, 7, 9, 11, 2, 4], [6, 6, 1, 12, 13, 14, 15, 2, 3, 4, 5, 1]]
    tight = Collator(64, "batch", mask_zero=False, dual=False)({"input_ids": seqs, "label": [0, 1]})
    loose = Collator(64, "max_len", mask_zero=False, dual=False)(
        {"input_ids": seqs, "label": [0, 1]}
    )
    assert loose["input_ids"].shape[1] == 64 and tight["input_ids"].shape[1] == 12
    with torch.no_grad():
        torch.testing.assert_close(model(tight), model(loose), rtol=1e-5, atol=1e-6)


def test_mean_padded_pooling_reproduces_the_peer_quirk():
    seqs = [[3, 5, 7], [6, 6, 1, 12, 13, 14]]
    batch = Collator(64, "max_len", mask_zero=False, dual=False)(
        {"input_ids": seqs, "label": [0, 1]}
    )
    shorter = Collator(64, "batch", mask_zero=False, dual=False)(
        {"input_ids": seqs, "label": [0, 1]}
    )
    valid, padded = model_for(), model_for("model.pooling=mean_padded")
    with torch.no_grad():
        torch.testing.assert_close(valid(batch), valid(shorter), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(
            padded(batch), padded(shorter), atol=1e-4
        )  # depends on the padded length


def test_mask_zero_treats_every_zero_as_padding():
    ids, mask = pad_sequences([[0, 4, 0, 5]], 6, mask_zero=True)
    assert mask.tolist() == [[False, True, False, True, False, False]]
    ids, mask = pad_sequences([[0, 4, 0, 5]], 6, mask_zero=False)
    assert mask.tolist() == [
        [True, True, True, True, False, False]
    ]  # a black pixel (id 0) stays a token
    ids, mask = pad_sequences([[0, 4], [1, 2]], 2, mask_zero=False)
    assert mask is None  # nothing padded: attention runs unmasked


def test_dual_head_sees_both_documents():
    torch.manual_seed(0)
    model = build_model(compose_config(["task=retrieval", "task.max_len=32"])).eval()
    collate = Collator(32, "batch", mask_zero=False, dual=True)
    a = collate({"input_ids_1": [[5, 6, 7]], "input_ids_2": [[8, 9]], "label": [1]})
    b = collate({"input_ids_1": [[5, 6, 7]], "input_ids_2": [[8, 10]], "label": [1]})
    c = collate({"input_ids_1": [[5, 6, 8]], "input_ids_2": [[8, 9]], "label": [1]})
    with torch.no_grad():
        assert not torch.allclose(model(a), model(b)) and not torch.allclose(model(a), model(c))


def test_attention_runs_in_fp32_under_autocast():
    model = model_for("attn=skyformer", "attn.num_landmarks=8")
    seen = []
    attention = model.encoder.blocks[0].attn.attention
    attention.register_forward_hook(
        lambda mod, inputs, out: seen.append((inputs[0].dtype, out.dtype))
    )
    batch = Collator(64, "batch", mask_zero=False, dual=False)(
        {"input_ids": [[3, 4, 5, 6, 7, 8, 9, 10]], "label": [0]}
    )
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(batch)
    assert seen == [(torch.float32, torch.float32)]
