"""What the Skyformer paper's code computes for its nine attentions: whole forward passes.

Written from reading the code, not copied, and independent of this package's modules (plain
loops, rolls and dense masks where the modules sort, gather and block). Each takes the code's
random draw as an argument, so a test or ``python -m lra_bench.fidelity`` can pin the same
draw in both. Sources:

- Reformer: pkuzengqi/Skyformer ``code/models/attention_reformer.py`` (commit 6ffd607) calls
  Hugging Face's ``LSHSelfAttention`` (transformers ``src/transformers/models/reformer/
  modeling_reformer.py``, commit 000824f17f924a8b520edf04c597c461fc83356a) with chunks of 64,
  one chunk before, none after, not a decoder.
- BigBird: pkuzengqi/Skyformer ``code/models/attention_bigbird.py`` (6ffd607), Hugging Face's
  block-sparse attention of 2021 copied into the repository.
- Nystromformer: pkuzengqi/Skyformer ``code/models/attention_nystrom.py`` (6ffd607).
- Softmax and kernelized: pkuzengqi/Skyformer ``code/models/attention.py`` (commit 2c9175b),
  ``SoftmaxAttention`` and ``SoftmaxAttention_RBF``.
- Linformer: pkuzengqi/Skyformer ``code/models/attention_linformer.py`` (6ffd607).
- Skyformer, Performer, Informer: pkuzengqi/Skyformer ``src/models/attention_skyformer.py``,
  ``attention_performer.py``, ``attention_informer.py`` (HEAD, commit cfe8c8c).

Masks are float tensors ``[b, n]`` (1 = real) as in the code; ``None`` means no padding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = [
    "bigbird_code",
    "bigbird_code_blocks",
    "bigbird_code_numpy",
    "informer_code",
    "kernelized_code",
    "linformer_code",
    "nystrom_code",
    "performer_code",
    "reformer_code",
    "skyformer_code",
    "softmax_code",
]


# ---------------------------------------------------------------- Reformer (Hugging Face LSH)


def reformer_code(
    qk: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, rotations: torch.Tensor, c: int
) -> torch.Tensor:
    """Hugging Face's LSH self-attention on shared query-keys ``qk`` ``[b, h, n, d]``.

    ``rotations [h, d, rounds, buckets / 2]`` are the random rotations it would draw.
    """
    b, h, n, d = qk.shape
    rounds = rotations.shape[2]
    assert rotations.shape[3] * 2 == 2 ** ((2 * (n // c)).bit_length() - 1), "its bucket count"
    rotated = torch.einsum("bhnd,hdrk->bhrnk", qk, rotations)
    buckets = torch.cat([rotated, -rotated], dim=-1).argmax(dim=-1)  # [b, h, rounds, n]
    n_buckets = rotations.shape[3] * 2
    if mask is not None and mask.sum() < mask.numel():  # padding gets one more bucket
        n_buckets += 1
        buckets = torch.where(mask[:, None, None, :] > 0, buckets, n_buckets - 1)
    offset = (torch.arange(rounds) * n_buckets).view(1, 1, -1, 1)
    flat = (buckets + offset).flatten(2)  # all rounds one sequence: [b, h, rounds * n]
    order = torch.sort(flat, dim=-1, stable=True).indices
    pos = order % n
    chunks = rounds * n // c
    q_s = qk.gather(2, pos.unsqueeze(-1).expand(-1, -1, -1, d)).view(b, h, chunks, c, d)
    v_s = v.gather(2, pos.unsqueeze(-1).expand(-1, -1, -1, d)).view(b, h, chunks, c, d)
    k_s = q_s * torch.rsqrt(q_s.pow(2).mean(-1, keepdim=True) + 1e-6) / math.sqrt(d)
    pos_c = pos.view(b, h, chunks, c)
    k_w = torch.cat([torch.roll(k_s, 1, dims=2), k_s], dim=3)  # previous chunk, then own
    v_w = torch.cat([torch.roll(v_s, 1, dims=2), v_s], dim=3)
    pos_w = torch.cat([torch.roll(pos_c, 1, dims=2), pos_c], dim=3)
    dots = q_s @ k_w.transpose(-1, -2)  # [b, h, chunks, c, 2c]
    if mask is not None:
        key_real = (mask[:, None, :].expand(-1, h, -1).gather(2, pos_w.flatten(2)) > 0).view(
            b, h, chunks, 1, 2 * c
        )
        dots = torch.where(key_real, dots, torch.tensor(-1e9, dtype=dots.dtype))
    itself = pos_c.unsqueeze(-1) == pos_w.unsqueeze(-2)
    dots = torch.where(itself, torch.tensor(-1e5, dtype=dots.dtype), dots)
    logits = torch.logsumexp(dots, dim=-1, keepdim=True)
    out = (torch.exp(dots - logits) @ v_w).view(b, h, rounds * n, d)
    undo = torch.empty_like(order).scatter_(-1, order, torch.arange(rounds * n).expand_as(order))
    out = out.gather(2, undo.unsqueeze(-1).expand(-1, -1, -1, d)).view(b, h, rounds, n, d)
    logits = logits.view(b, h, rounds * n).gather(2, undo).view(b, h, rounds, n, 1)
    weights = torch.exp(logits - torch.logsumexp(logits, dim=2, keepdim=True))
    return (out * weights).sum(dim=2)


# ---------------------------------------------------------------- BigBird (Hugging Face, 2021)


def bigbird_code(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    rand_attn: torch.Tensor,
    bs: int,
) -> torch.Tensor:
    """The code's block-sparse attention, one query block at a time, its key blocks listed as
    the code lists them (a block listed twice is attended twice); ``rand_attn [h, nb - 2, r]``."""
    b, h, n, d = q.shape
    nb = n // bs
    real = torch.ones(b, n, dtype=q.dtype) if mask is None else mask.to(q.dtype)
    out = torch.zeros_like(q)
    for i in range(nb):
        if i in (0, nb - 1):
            listed = [torch.arange(nb).expand(h, -1)]
        elif i == 1:
            listed = [torch.tensor([0, 1, 2, nb - 1]).expand(h, -1), rand_attn[:, 0]]
        elif i == nb - 2:
            listed = [torch.tensor([0, nb - 3, nb - 2, nb - 1]).expand(h, -1), rand_attn[:, -1]]
        else:
            window = torch.tensor([0, i - 1, i, i + 1, nb - 1]).expand(h, -1)
            listed = [window, rand_attn[:, i - 1]]
        blocks = torch.cat(listed, dim=-1)  # [h, s]
        tokens = (blocks.unsqueeze(-1) * bs + torch.arange(bs)).flatten(1)  # [h, s * bs]
        idx = tokens.view(1, h, -1, 1).expand(b, -1, -1, d)
        k_i, v_i = k.gather(2, idx), v.gather(2, idx)
        scores = q[:, :, i * bs : (i + 1) * bs] @ k_i.transpose(-1, -2) / math.sqrt(d)
        key_real = real.gather(1, tokens.flatten().expand(b, -1)).view(b, h, 1, -1)
        scores = scores + (1.0 - key_real) * -10000.0
        out[:, :, i * bs : (i + 1) * bs] = torch.softmax(scores, dim=-1) @ v_i
    return out * real[:, None, :, None]


def bigbird_code_blocks(n: int, bs: int, r: int, ranking: np.ndarray) -> torch.Tensor:
    """The code's random blocks ``[h, nb - 2, r]`` at padded length n, its random permutations
    replaced by ``ranking [h, nb, nb]`` (row i of head h lists every block in the order drawn):
    a permutation of a candidate list is the ranking restricted to that list."""
    nb = n // bs
    heads = ranking.shape[0]
    out = np.zeros((heads, nb - 2, r), dtype=np.int64)
    for head in range(heads):
        for i in range(1, nb - 1):
            drawn = []
            for start, end, count, candidates in _code_rows(n, bs, r, i):
                order = [j for j in ranking[head, i] if start <= j < end]
                drawn += [j for j in order if j in candidates][:count]
            out[head, i - 1] = drawn
    return torch.from_numpy(out)


def _old_plan_list(n: int, bs: int, i: int) -> list[int]:
    """Row i's candidate list at the code's old lengths (1024, 3072, 4096), in its order."""
    nb = n // bs
    middle = list(range(1, nb - 1))
    last = 1024 // bs - 1 if 1024 > 2 * bs else nb - 1
    if i == 1:
        return middle[2:last]
    if i == 2:
        return middle[3:last]
    if i in (nb - 3, nb - 2) or i - 2 > last:
        return middle[:last]
    if i + 1 == last:
        return middle[: i - 2]
    return middle[: i - 2] + middle[i + 1 : last]


def _plan(n: int, bs: int, r: int) -> list[tuple[int, int]]:
    """Hugging Face's ``_get_rand_attn_plan`` in blocks: (end block, random blocks) per part."""
    nb = n // bs
    if 2 * r + 5 < nb:
        return [(2 * r + 5, r), (nb, 0)]
    if r + 5 < nb:
        return [(r + 5, r // 2), (nb, r - r // 2)]
    return [(nb, r)]


def _illegal(i: int, end: int) -> set[int]:
    """Blocks row i may not draw from a range ending at ``end`` (its window, the range's ends)."""
    illegal = {i - 1, i, i + 1, 0, end - 1}
    if i == 1:
        illegal.add(end - 2)
    if i == end - 2:
        illegal.add(1)
    return illegal


def _code_rows(n: int, bs: int, r: int, i: int) -> list[tuple[int, int, int, set[int]]]:
    """Row i's draws in the code: (range start, range end, how many, legal blocks) each."""
    if n in (1024, 3072, 4096):  # "old plans used in paper"
        return [(0, n // bs, r, set(_old_plan_list(n, bs, i)))]
    rows, start = [], 0
    for end, count in _plan(n, bs, r):
        if count:
            rows.append((start, end, count, set(range(start, end)) - _illegal(i, end)))
        start = end
    return rows


def bigbird_code_numpy(n: int, bs: int, r: int, heads: int, seed: int) -> torch.Tensor:
    """The code's random blocks ``[heads, nb - 2, r]`` as it draws them: numpy's global
    generator seeded with ``seed``, then its loops (heads outer at the old lengths; plan parts,
    rows, heads inner elsewhere, the last row drawn and dropped)."""
    rng, nb = np.random.RandomState(seed), n // bs
    if n in (1024, 3072, 4096):
        old = [
            [rng.permutation(np.array(_old_plan_list(n, bs, i)))[:r] for i in range(1, nb - 1)]
            for _ in range(heads)
        ]
        return torch.from_numpy(np.array(old, dtype=np.int64))
    plan = _plan(n, bs, r)
    ends, counts = [e for e, _ in plan], [c for _, c in plan]
    out = np.full((heads, nb, sum(counts)), -1, dtype=np.int64)  # -1: none left (the code fails)

    def fill(rows: range, part: int) -> None:
        start, col = (ends[part - 1] if part else 0), sum(counts[:part])
        for i in rows:
            for h in range(heads):
                order = rng.permutation(np.arange(start, ends[part]))
                legal = [j for j in order if j not in _illegal(i, ends[part])][: counts[part]]
                out[h, i, col : col + len(legal)] = legal

    for part in range(len(plan)):
        if part > 0:
            if counts[part]:
                fill(range(1, ends[part - 1]), part)
            for earlier in range(part):
                if counts[earlier]:
                    fill(range(ends[part - 1], ends[part]), earlier)
        if counts[part]:
            fill(range(1 if part == 0 else ends[part - 1], ends[part]), part)
    return torch.from_numpy(out[:, 1 : nb - 1])


# ---------------------------------------------------------------- Nystromformer


def nystrom_code(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, m: int
) -> torch.Tensor:
    """The code's Nystrom attention without convolution: padded rows of Q and K zeroed, landmarks
    the means of m equal segments of the padded length, six Newton-Schulz steps started at
    K^T / (largest column sum over the whole tensor)."""
    b, h, n, d = q.shape
    real = torch.ones(b, n, dtype=q.dtype) if mask is None else mask.to(q.dtype)
    q = q * real[:, None, :, None] / math.sqrt(math.sqrt(d))
    k = k * real[:, None, :, None] / math.sqrt(math.sqrt(d))
    q_l = q.reshape(b, h, m, n // m, d).mean(dim=-2)
    k_l = k.reshape(b, h, m, n // m, d).mean(dim=-2)
    kernel_1 = torch.softmax(q @ k_l.transpose(-1, -2), dim=-1)
    kernel_2 = torch.softmax(q_l @ k_l.transpose(-1, -2), dim=-1)
    kernel_3 = torch.softmax(q_l @ k.transpose(-1, -2) - 1e9 * (1 - real[:, None, None, :]), dim=-1)
    eye = torch.eye(m, dtype=q.dtype)
    z = kernel_2.transpose(-1, -2) / kernel_2.sum(dim=-2).max()
    for _ in range(6):
        kz = kernel_2 @ z
        z = (0.25 * z) @ (13 * eye - kz @ (15 * eye - kz @ (7 * eye - kz)))
    return (kernel_1 @ z) @ (kernel_3 @ v)


# ---------------------------------------------------------------- softmax and kernelized


def _real(q: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The code's float mask ``[b, n]``: all ones when there is no padding."""
    b, _, n, _ = q.shape
    return torch.ones(b, n, dtype=q.dtype) if mask is None else mask.to(q.dtype)


def softmax_code(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """softmax(Q K^T / sqrt d - 1e6 on padded keys) V, as the code's ``SoftmaxAttention``."""
    real = _real(q, mask)
    scores = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    scores = scores - 1e6 * (1.0 - real)[:, None, None, :]
    return torch.softmax(scores, dim=-1) @ v


def kernelized_code(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """The code's ``SoftmaxAttention_RBF``: padded rows of Q and K zeroed, both scaled by
    d^-1/4, exp(q.k - |q|^2/2 - |k|^2/2 - 1e9 on padded keys) times V, no normalisation."""
    real = _real(q, mask)
    scale = q.shape[-1] ** -0.25
    qs, ks = q * real[:, None, :, None] * scale, k * real[:, None, :, None] * scale
    half_q = 0.5 * (qs * qs).sum(-1)[..., :, None]
    half_k = 0.5 * (ks * ks).sum(-1)[..., None, :]
    exponent = torch.einsum("bhid,bhjd->bhij", qs, ks) - half_q - half_k
    exponent = exponent - 1e9 * (1.0 - real)[:, None, None, :]
    return torch.exp(exponent) @ v


# ---------------------------------------------------------------- Linformer


def linformer_code(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, e: torch.Tensor
) -> torch.Tensor:
    """The code's Linformer: one projection ``e [h, k, n]`` per head for both keys and values
    (padded rows zeroed first), then softmax(Q (E K)^T / sqrt d) (E V)."""
    real = _real(q, mask)[:, None, :, None]
    k_proj = torch.einsum("hkn,bhnd->bhkd", e, k * real)
    v_proj = torch.einsum("hkn,bhnd->bhkd", e, v * real)
    scores = torch.einsum("bhid,bhkd->bhik", q, k_proj) / math.sqrt(q.shape[-1])
    return torch.softmax(scores, dim=-1) @ v_proj


# ---------------------------------------------------------------- Skyformer


def skyformer_code(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    sketch: torch.Tensor,
) -> torch.Tensor:
    """The code's ``Skyformer.forward``: rows of [Q; K] (padded rows zeroed, scaled by 32^-1/4,
    a constant in the code) picked by ``sketch [b, m]`` (its ``uniform_sketching``: K row j is
    n + j, the same landmarks for every head), Gaussian kernels to them, W = k(S, S) + 0.1 I
    normalised by its row sums, six Newton-Schulz steps started at W^T / (largest column sum
    over the whole tensor), and no output normalisation."""
    b, h, n, d = q.shape
    real = _real(q, mask)[:, None, :, None]
    rows = torch.cat([q * real, k * real], dim=2) * 32**-0.25  # [b, h, 2n, d]
    marks = torch.stack([rows[i][:, sketch[i]] for i in range(b)])  # [b, h, m, d]
    half_rows = 0.5 * (rows * rows).sum(-1)[..., :, None]
    half_marks = 0.5 * (marks * marks).sum(-1)[..., None, :]
    a_s = torch.exp(torch.einsum("bhid,bhjd->bhij", rows, marks) - half_rows - half_marks)
    w = torch.stack([a_s[i][:, sketch[i]] for i in range(b)])  # [b, h, m, m]
    w = w + 0.1 * torch.eye(w.shape[-1], dtype=w.dtype)
    d_half = w.sum(-1).rsqrt()  # [b, h, m]
    w = d_half[..., :, None] * w * d_half[..., None, :]
    eye = torch.eye(w.shape[-1], dtype=w.dtype)
    z = w.transpose(-1, -2) / w.sum(dim=-2).max()
    for _ in range(6):
        wz = w @ z
        z = (0.25 * z) @ (13 * eye - wz @ (15 * eye - wz @ (7 * eye - wz)))
    k_side = ((a_s[:, :, n:] * d_half[..., None, :]) @ z) * d_half[..., None, :] * real
    return a_s[:, :, :n] @ (k_side.transpose(-1, -2) @ (v * real))


# ---------------------------------------------------------------- Performer


def performer_code(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, w: torch.Tensor
) -> torch.Tensor:
    """The code's ``PerformerAttention`` with its in-file ``FastAttention`` (softmax kernel, not
    the generalised one) on random features ``w [m, d]``: Q and K divided by d^1/4, padded K
    and V rows zeroed, then inside the feature map x d^-1/4 again; query features shifted by
    their row's max, key features by one max over the whole tensor, eps 1e-4 added to each."""
    d = q.shape[-1]
    real = _real(q, mask)[:, None, :, None]
    inner = d**-0.25

    def features(x: torch.Tensor, query: bool) -> torch.Tensor:
        proj = torch.einsum("bhnd,md->bhnm", x * inner, w)
        half = 0.5 * (x * x).sum(-1, keepdim=True) * inner**2
        top = proj.amax(dim=-1, keepdim=True) if query else proj.max()
        return w.shape[0] ** -0.5 * (torch.exp(proj - half - top) + 1e-4)

    phi_q = features(q / d**0.25, query=True)
    phi_k = features(k / d**0.25 * real, query=False)
    normaliser = torch.einsum("bhnm,bhm->bhn", phi_q, phi_k.sum(dim=2))
    context = torch.einsum("bhnm,bhne->bhme", phi_k, v * real)
    return torch.einsum("bhme,bhnm->bhne", context, phi_q) / normaliser[..., None]


# ---------------------------------------------------------------- Informer


def informer_code(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, factor: int, samples: torch.Tensor
) -> torch.Tensor:
    """The code's ``ProbAttention`` (the mask is never read): query i's sampled keys are
    ``samples [n, U]`` (its ``torch.randint``, the same for every sequence and head); the
    c ceil(ln n) queries of largest max - sum / n over their samples (unscaled scores) get
    softmax(q K^T / sqrt d) V over all n keys, every other query the mean of all n values."""
    b, h, n, d = q.shape
    u = min(factor * math.ceil(math.log(n)), n)
    sampled = k[:, :, samples]  # [b, h, n, U, d]
    s = torch.einsum("bhnd,bhnud->bhnu", q, sampled)
    sparsity = s.max(dim=-1).values - s.sum(dim=-1) / n
    out = v.mean(dim=2, keepdim=True).repeat(1, 1, n, 1)
    for i in range(b):
        for j in range(h):
            top = torch.topk(sparsity[i, j], u).indices
            weights = torch.softmax(q[i, j, top] @ k[i, j].T / math.sqrt(d), dim=-1)
            out[i, j, top] = weights @ v[i, j]
    return out


# ---------------------------------------------------------------- the code's random draws


def performer_code_features(m: int, d: int, rng: np.random.RandomState) -> torch.Tensor:
    """Features ``[m, d]`` drawn as the code's ``gaussian_orthogonal_random_matrix`` (scaling 0,
    no sign correction of the QR factor): rows of Q^T from blocks of d x d Gaussians, each row
    times the norm of a fresh Gaussian d-vector."""
    blocks = [np.linalg.qr(rng.standard_normal((d, d)))[0].T for _ in range(-(-m // d))]
    rows = np.concatenate(blocks)[:m]
    return torch.from_numpy(rows * np.linalg.norm(rng.standard_normal((m, d)), axis=1)[:, None])


def informer_code_samples(n: int, factor: int, rng: np.random.RandomState) -> torch.Tensor:
    """Sampled keys ``[n, U]`` as the code's ``torch.randint(L_K, (L_Q, U))``, U = c ceil(ln n)."""
    return torch.from_numpy(rng.randint(n, size=(n, min(factor * math.ceil(math.log(n)), n))))


def skyformer_code_sketch(
    lengths: torch.Tensor, n: int, m: int, rng: np.random.RandomState
) -> torch.Tensor:
    """Landmark rows ``[b, m]`` as the code's ``uniform_sketching``: one set of m uniforms for
    the batch, scaled by each sequence's real length and floored; the second half + n (K)."""
    picks = (torch.from_numpy(rng.random_sample(m))[None] * lengths[:, None].double()).long()
    picks[:, m // 2 :] += n
    return picks
