"""``python -m lra_bench.fidelity``: how far each published code's attention is from this harness's default.

For every attention that a ``parity`` choice changes, both versions are built from the composed
configs (``parity=none`` and the choice) with the same parameter seed, run in evaluation mode
(pinned draws) on the same float64 inputs, and compared by the relative Frobenius difference of
their outputs over real tokens, without and with padding. The last column is the default
against itself with the next seed of its random draws: the size of a difference that sampling
alone makes. docs/fidelity.md quotes the table.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import torch
from omegaconf import OmegaConf

from lra_bench.attention import build_attention
from lra_bench.attention.registry import REGISTRY
from lra_bench.cli_style import hydra_style_alias
from lra_bench.compose import compose_config
from lra_bench.paths import conf_dir

HEAD_DIM, HEADS, BATCH = 32, 2, 2  # the Skyformer paper's heads (two of 32 dimensions)
EXTRA = [
    (
        "reformer",
        {"wrap": False},
        {"wrap": True},
        "wrap: false -> true (this harness before -> now)",
    )
]


def attn_settings(attn: str, parity: str) -> dict[str, Any]:
    """The attention node composed for ``attn=<attn> parity=<parity>``, as a plain dict."""
    node = OmegaConf.to_container(
        compose_config([f"attn={attn}", f"parity={parity}"]).attn, resolve=True
    )
    assert isinstance(node, dict)
    return node


def inputs(n: int, padded: bool, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """q, k, v ~ N(0, 1) in float64 and, when padded, a mask whose second sequence keeps 3/4 of n."""
    g = torch.Generator().manual_seed(seed)
    qkv = [
        torch.randn(BATCH, HEADS, n, HEAD_DIM, generator=g, dtype=torch.float64) for _ in range(3)
    ]
    if not padded:
        return qkv, None
    mask = torch.ones(BATCH, n, dtype=torch.bool)
    mask[1, 3 * n // 4 :] = False
    return qkv, mask


def output(
    settings: dict[str, Any], qkv: list[torch.Tensor], mask: torch.Tensor | None, n: int
) -> torch.Tensor:
    torch.manual_seed(0)  # the same learned parameters (where shapes agree) on both sides
    attn = build_attention(settings, head_dim=HEAD_DIM, num_heads=HEADS, max_len=n).double().eval()
    with torch.no_grad():
        return attn(*qkv, mask)


def relative_difference(
    a: dict[str, Any], b: dict[str, Any], *, n: int = 512, padded: bool = False
) -> float:
    """||out_b - out_a|| / ||out_a|| over real tokens, float64, pinned draws."""
    qkv, mask = inputs(n, padded)
    out_a, out_b = output(a, qkv, mask, n), output(b, qkv, mask, n)
    if mask is not None:
        keep = mask[:, None, :, None].expand_as(out_a)
        out_a, out_b = out_a[keep], out_b[keep]
    return float((out_b - out_a).norm() / out_a.norm())


def comparisons() -> list[tuple[str, str, dict[str, Any], dict[str, Any], str]]:
    """(attention, parity, default settings, published settings, what changes) for every parity file."""
    rows = []
    for folder in sorted((conf_dir() / "parity_attn").iterdir()):
        for path in sorted(folder.glob("*.yaml")):
            attn, parity = path.stem, folder.name
            a = attn_settings(attn, "none")
            wanted = OmegaConf.to_container(OmegaConf.load(path))
            assert isinstance(wanted, dict)
            b = (
                attn_settings(attn, parity)
                if settings_exist({"name": attn, **wanted})
                else {"name": attn, **wanted}
            )
            changed = {k: v for k, v in b.items() if a.get(k) != v}
            rows.append(
                (attn, parity, a, b, ", ".join(f"{k}: {v}" for k, v in changed.items()) or "(none)")
            )
    for attn, before, after, what in EXTRA:
        base = attn_settings(attn, "none")
        rows.append((attn, "none", base | before, base | after, what))
    return rows


def settings_exist(settings: dict[str, Any]) -> bool:
    return set(settings) <= {f.name for f in fields(REGISTRY[settings["name"]].config)}


def table(n: int) -> str:
    lines = [
        f"| attention | parity | settings | rel. diff, n={n} | padded | default vs. its next draw |",
        "|---|---|---|---|---|---|",
    ]
    for attn, parity, a, b, what in comparisons():
        if not settings_exist(b):
            diffs = ["settings not available"] * 2
        else:
            diffs = [f"{relative_difference(a, b, n=n, padded=p):.3g}" for p in (False, True)]
        noise = relative_difference(a, a | {"seed": a["seed"] + 1}, n=n) if "seed" in a else 0.0
        lines.append(f"| {attn} | {parity} | {what} | {diffs[0]} | {diffs[1]} | {noise:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lra_bench.fidelity", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--n", type=int, default=512, help="sequence length (default 512)")
    args = parser.parse_args(hydra_style_alias(parser, argv))
    sys.stdout.write(table(args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
