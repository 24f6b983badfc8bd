"""``python -m lra_bench.fidelity``: this harness against the published code and its own default.

First table: for each of the nine attentions of the Skyformer paper, whose published code is
restated in ``lra_bench.testing.published_code``, this harness under ``parity=skyformer_code``
against that restatement, per length, without and with padding, the code's random draw pinned in
both (BigBird: the code's own numpy draw, and a ranking of the blocks pinned in both); then the
same with each quirk's setting switched back to its default (each must break the match where it
applies). Every cell is computed when the command runs.

Second table: for every attention that a ``parity`` choice changes, both versions are built from
the composed configs (``parity=none`` and the choice) with the same parameter seed, run in
evaluation mode (pinned draws) on the same float64 inputs, and compared by the relative
Frobenius difference of their outputs over real tokens, without and with padding. The last
column is the default against itself with the next seed of its random draws: the size of a
difference that sampling alone makes. docs/fidelity.md quotes both tables.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from lra_bench.attention import build_attention
from lra_bench.attention.registry import REGISTRY
from lra_bench.cli_style import hydra_style_alias
from lra_bench.compose import compose_config
from lra_bench.paths import conf_dir
from lra_bench.testing.published_code import (
    bigbird_code,
    bigbird_code_blocks,
    bigbird_code_numpy,
    informer_code,
    informer_code_samples,
    kernelized_code,
    linformer_code,
    nystrom_code,
    performer_code,
    performer_code_features,
    reformer_code,
    skyformer_code,
    skyformer_code_sketch,
    softmax_code,
)

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
    return dict(_composed_attn(attn, parity))


@functools.cache
def _composed_attn(attn: str, parity: str) -> tuple[tuple[str, Any], ...]:
    node = OmegaConf.to_container(
        compose_config([f"attn={attn}", f"parity={parity}"]).attn, resolve=True
    )
    assert isinstance(node, dict)
    return tuple(node.items())


def inputs(n: int, padded: bool, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """q, k, v ~ N(0, 1) in float64 and, when padded, a mask whose second sequence keeps 3n/4."""
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
    """(attention, parity, default settings, published settings, what changes) per parity file."""
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
        "| attention | parity | settings | "
        f"rel. diff, n={n} | padded | default vs. its next draw |",
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


CODE_LENGTHS = (512, 1024, 2048, 4096)
CODE_D = 8  # head size of the code comparisons (small: the structure, not the size, is compared)
# the Skyformer code scales q, k by 32^-1/4, a constant: d^-1/4 at its only head size, 32
CODE_DIMS = {"skyformer": 32}
CODE_INFORMER_FEATURES = 128  # the code's in_nb_features (src/config.py, every task)
# each quirk of parity=skyformer_code; off = the setting's default (the papers' behaviour)
QUIRKS = {
    "softmax": (),
    "kernelized": (),
    "skyformer": ("pinv_init",),
    "linformer": ("share_kv", "per_head"),
    "performer": ("score_scale", "padded_keys", "stabilizer", "eps"),
    "informer": ("nb_features", "sparsity_mean", "ignore_mask"),
    "reformer": ("rounds_joined", "wrap_to", "key_norm"),
    "bigbird": ("draw", "random_span", "duplicates", "last_global"),
    "nystromformer": ("landmark_span", "pinv_init", "conv_kernel"),
}
# settings of parity=skyformer_code that act outside an evaluation forward pass with pinned
# draws (so no comparison here can see them), and the test that covers each
OUTSIDE_FORWARD = {
    "linformer": {"trainable": "tests/test_fidelity.py (E a buffer, no parameter)"},
    "performer": {
        "redraw": "tests/test_attention_approximations.py (training draws)",
        "qr_uniform": "tests/test_fidelity_code.py (the code's QR factor, unsigned)",
    },
    "informer": {"key_samples": "tests/test_fidelity_code.py (the code's torch.randint draw)"},
    "bigbird": {
        "pattern": "tests/test_fidelity_code.py (one pattern for every forward)",
        "pattern_seed": "tests/test_fidelity_code.py (the pattern follows the run seed)",
    },
}
# inputs scale per quirk control: the eps of key_norm shows only on query-keys of small norm;
# the pseudo-inverse's start only where six Newton-Schulz steps have not converged (q, k small)
CONTROL_SCALE = {
    ("reformer", "key_norm"): 0.01,
    ("skyformer", "pinv_init"): 0.3,
    ("nystromformer", "pinv_init"): 2.0,
}
# BigBird's block plan, tested with this module's generator, the code's draw replaced by a
# pinned ranking of the blocks (the code's own numpy draw fixes which blocks a seed gives)
RANKED = {"bigbird": {"draw": "torch"}}


def code_inputs(
    n: int, padded: bool, seed: int = 0, scale: float = 1.0, d: int = CODE_D
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """q, k, v ~ N(0, 1) float64 ``[2, 2, n, d]`` (q, k times ``scale``) and, when padded,
    a mask whose second sequence keeps 3n/4 - 37 tokens (not a whole number of chunks)."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(BATCH, HEADS, n, d, generator=g, dtype=torch.float64) for _ in "qkv")
    mask = None
    if padded:
        mask = torch.ones(BATCH, n, dtype=torch.bool)
        mask[1, 3 * n // 4 - 37 :] = False
    return [q * scale, k * scale, v], mask


def ranking_scores(ranking: np.ndarray) -> torch.Tensor:
    """BigBird's block scores ``[1, h, nb, nb]`` that rank the blocks as ``ranking`` lists them."""
    h, nb, _ = ranking.shape
    scores = np.empty((h, nb, nb))
    np.put_along_axis(scores, ranking, 1.0 - np.arange(nb) / nb, axis=-1)
    return torch.from_numpy(scores).unsqueeze(0)


def _reformer(module: Any, q, k, v, real, rng) -> torch.Tensor:
    cfg = module.cfg
    shape = (HEADS, q.shape[-1], cfg.num_hashes, module.num_buckets // 2)
    rot = torch.from_numpy(rng.standard_normal(shape))
    module.draw_rotations = lambda *a, **kw: rot
    return reformer_code(q, v, real, rot, cfg.chunk_size)


def _bigbird_numpy(module: Any, q, k, v, real, rng) -> torch.Tensor:
    """Nothing pinned: the code's own numpy draw for ``pattern_seed``, ours its own."""
    cfg, n = module.cfg, q.shape[2]
    blocks = bigbird_code_numpy(n, cfg.block_size, cfg.num_random_blocks, HEADS, cfg.pattern_seed)
    return bigbird_code(q, k, v, real, blocks, cfg.block_size)


def _bigbird_ranked(module: Any, q, k, v, real, rng) -> torch.Tensor:
    """Both sides pinned to one random ranking of the blocks."""
    cfg, n = module.cfg, q.shape[2]
    nb = n // cfg.block_size
    ranking = np.argsort(rng.random_sample((HEADS, nb, nb)), axis=-1)
    scores = ranking_scores(ranking)
    module.block_scores = lambda b, *a, **kw: scores.expand(b, -1, -1, -1)
    blocks = bigbird_code_blocks(n, cfg.block_size, cfg.num_random_blocks, ranking)
    return bigbird_code(q, k, v, real, blocks, cfg.block_size)


def _linformer(module: Any, q, k, v, real, rng) -> torch.Tensor:
    """The code's projection, one ``[k, n]`` per head, pinned in ours (shared: the first head's)."""
    e = torch.from_numpy(rng.normal(0.0, 0.02, (HEADS, module.cfg.proj_dim, q.shape[2])))
    module.proj_k = e if module.cfg.per_head else e[0]
    return linformer_code(q, k, v, real, e)


def _skyformer(module: Any, q, k, v, real, rng) -> torch.Tensor:
    b, h, n, _ = q.shape
    lengths = torch.full((b,), n) if real is None else real.sum(-1).long()
    sketch = skyformer_code_sketch(lengths, n, module.cfg.num_landmarks, rng)
    module.draw_landmarks = lambda *a, **kw: sketch[:, None, :].expand(-1, h, -1)
    return skyformer_code(q, k, v, real, sketch)


def _performer(module: Any, q, k, v, real, rng) -> torch.Tensor:
    w = performer_code_features(module.cfg.num_features, q.shape[-1], rng)
    module.draw_features = lambda *a, **kw: w
    return performer_code(q, k, v, real, w)


def _informer(module: Any, q, k, v, real, rng) -> torch.Tensor:
    """The code's c = ceil(128 / ln max_len) (its ``in_nb_features``), whatever ours uses."""
    n = q.shape[2]
    factor = math.ceil(CODE_INFORMER_FEATURES / math.log(n))
    samples = informer_code_samples(n, factor, rng)
    module.draw_key_samples = lambda lengths, n, heads: samples.expand(len(lengths), heads, -1, -1)
    return informer_code(q, k, v, factor, samples)


# the restated code of each attention, with the code's draw pinned in ``module``
RESTATED = {
    "softmax": lambda module, q, k, v, real, rng: softmax_code(q, k, v, real),
    "kernelized": lambda module, q, k, v, real, rng: kernelized_code(q, k, v, real),
    "skyformer": _skyformer,
    "linformer": _linformer,
    "performer": _performer,
    "informer": _informer,
    "reformer": _reformer,
    "bigbird": _bigbird_numpy,
    "nystromformer": lambda module, q, k, v, real, rng: nystrom_code(
        q, k, v, real, module.cfg.num_landmarks
    ),
}


def ours_and_code(
    attn: str,
    n: int,
    padded: bool,
    overrides: dict[str, Any],
    scale: float = 1.0,
    seed: int = 1,
    ranked: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """This harness's output under ``parity=skyformer_code`` (plus ``overrides``) and the
    restated code's, on the same inputs and the same pinned draw. BigBird: the code's own
    numpy draw for ``pattern_seed``, ours not pinned; ``ranked``: both pinned to one ranking."""
    if attn not in RESTATED:
        raise ValueError(f"attention: no restated code for {attn!r}; choose {', '.join(QUIRKS)}")
    d = CODE_DIMS.get(attn, CODE_D)
    (q, k, v), mask = code_inputs(n, padded, seed, scale, d)
    settings = attn_settings(attn, "skyformer_code") | (RANKED.get(attn, {}) if ranked else {})
    settings |= overrides
    module = build_attention(settings, head_dim=d, num_heads=HEADS, max_len=n).double().eval()
    real = None if mask is None else mask.double()
    restate = _bigbird_ranked if attn == "bigbird" and ranked else RESTATED[attn]
    ref = restate(module, q, k, v, real, np.random.RandomState(seed))
    with torch.no_grad():
        out = module(q, k, v, mask)
    if mask is not None:
        keep = mask[:, None, :, None].expand_as(out)
        out, ref = out[keep], ref[keep]
    return out, ref


def code_difference(
    attn: str, n: int, padded: bool, off: str | None = None, ranked: bool = False
) -> float:
    """max |ours - code| / max |code| over real tokens; ``off``: a quirk switched to its default;
    ``ranked``: BigBird's draw from this module's generator, pinned to a ranking of the blocks
    (every quirk but ``draw`` is controlled so)."""
    overrides, scale = {}, 1.0
    ranked = ranked or (off not in (None, "draw") and attn in RANKED)
    if off is not None:
        overrides[off] = getattr(REGISTRY[attn].config(), off)
        scale = CONTROL_SCALE.get((attn, off), 1.0)
    out, ref = ours_and_code(attn, n, padded, overrides, scale, ranked=ranked)
    return float((out - ref).abs().max() / ref.abs().max())


def code_table(lengths: Sequence[int] = CODE_LENGTHS) -> str:
    """Per restated attention, length and padding: parity against the code, then each quirk off."""
    cols = [f"n={n}{' padded' if p else ''}" for n in lengths for p in (False, True)]
    lines = [
        "| attention | settings | " + " | ".join(cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for attn, quirks in QUIRKS.items():
        rows = [(None, False)] + [(None, True)] * (attn in RANKED) + [(q, False) for q in quirks]
        for off, ranked in rows:
            what = "parity=skyformer_code" if off is None else f"... with {off}: default"
            if ranked or (off not in (None, "draw") and attn in RANKED):
                what += ", ranked draw"
            if (attn, off) in CONTROL_SCALE:
                what += f" (q, k x {CONTROL_SCALE[attn, off]})"
            diffs = [
                code_difference(attn, n, p, off, ranked) for n in lengths for p in (False, True)
            ]
            lines.append(f"| {attn} | {what} | " + " | ".join(f"{x:.2g}" for x in diffs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lra_bench.fidelity", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--n", type=int, default=512, help="sequence length of the second table (default 512)"
    )
    parser.add_argument(
        "--code-lengths",
        type=int,
        nargs="+",
        default=list(CODE_LENGTHS),
        help="lengths of the first table (default 512 1024 2048 4096; powers of 2 from 512)",
    )
    args = parser.parse_args(hydra_style_alias(parser, argv))
    bad = [n for n in args.code_lengths if n < 512 or n & (n - 1)]
    if bad:
        parser.error(f"--code-lengths: {bad[0]} is not a power of 2 of at least 512")
    sys.stdout.write("Against the published code (max |ours - code| / max |code|):\n\n")
    sys.stdout.write(code_table(args.code_lengths))
    sys.stdout.write("\nDefault against the parity settings:\n\n")
    sys.stdout.write(table(args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
