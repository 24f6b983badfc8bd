"""ListOps generator (LRA's grammar), vectorised and seeded.

LRA draws each expression recursively in Python: a node at depth ``d < 10`` is an operator with
probability 0.25 (else a digit leaf; depth 10 is always a leaf), an operator is uniform over
``[MIN [MAX [MED [SM`` with 2..10 children, and an expression is kept when
``min_length < length < max_length`` (length = tokens without parentheses). Only about 8% of draws
are kept, so a full set draws over a million expressions and well over 10^8 nodes; here the
branching process is simulated level by level in numpy for a whole chunk of draws at once: draws are
pruned as soon as they cannot end below ``max_length``, then kept trees are evaluated bottom-up and
serialised into the release's string format with array scatters.

Determinism: draws come in fixed-size chunks, chunk ``i`` seeded by ``(seed, i)``;
chunks are consumed in index order and deduplicated in order, so the output is
byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing as mp
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
MIN, MAX, MED, SM = range(4)
VALUE_P = 0.25  # probability that a node above the depth limit is an operator
MAX_DEPTH = 10
MAX_ARGS = 10
CHUNK_DRAWS = 16_384  # draws per chunk: fixed, part of what makes the output reproducible
SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = b"Source\tTarget\n"


@dataclass(frozen=True)
class Trees:
    """A forest stored level by level; nodes of one level are in (tree, left-to-right) order.

    ``levels[d]`` holds for depth ``d + 1``: ``tree`` (index of the draw), ``is_op``, and
    for operator nodes (in level order) ``k`` (children) and ``op``; for leaves ``leaf``.
    """

    n_trees: int
    levels: list[dict[str, np.ndarray]]


def simulate(rng: np.random.Generator, n_draws: int, max_length: int) -> tuple[Trees, np.ndarray]:
    """Draw ``n_draws`` trees; return the forest and each tree's length (-1 if pruned).

    A tree is pruned once its committed tokens plus one token per pending child reach
    ``max_length``: it can no longer be kept, so its subtrees are never drawn.
    """
    tree = np.arange(n_draws, dtype=np.int64)
    alive = np.ones(n_draws, dtype=bool)
    tokens = np.zeros(n_draws, dtype=np.int64)
    levels: list[dict[str, np.ndarray]] = []
    for depth in range(1, MAX_DEPTH + 1):
        n = len(tree)
        if depth < MAX_DEPTH:
            is_op = rng.random(n) < VALUE_P
        else:
            is_op = np.zeros(n, dtype=bool)
        n_op = int(is_op.sum())
        k = rng.integers(2, MAX_ARGS + 1, n_op).astype(np.int64)
        op = rng.integers(0, len(OPERATORS), n_op).astype(np.int8)
        leaf = rng.integers(0, 10, n - n_op).astype(np.int8)
        tokens += np.bincount(tree, weights=np.where(is_op, 2, 1), minlength=n_draws).astype(
            np.int64
        )
        pending = np.bincount(tree[is_op], weights=k, minlength=n_draws).astype(np.int64)
        newly_dead = alive & (tokens + pending >= max_length)
        if newly_dead.any():
            alive &= ~newly_dead
            keep = alive[tree]
            keep_op = keep[is_op]
            tree, is_op, k, op, leaf = (
                tree[keep],
                is_op[keep],
                k[keep_op],
                op[keep_op],
                leaf[keep[~is_op]],
            )
        levels.append({"tree": tree, "is_op": is_op, "k": k, "op": op, "leaf": leaf})
        tree = np.repeat(tree[is_op], k)
        if len(tree) == 0:
            break
    length = np.where(alive, tokens, -1)
    return Trees(n_draws, levels), length


def select(trees: Trees, keep: np.ndarray) -> Trees:
    """The sub-forest of the trees where ``keep`` is True (they must be complete, never pruned)."""
    levels = []
    for lv in trees.levels:
        node_keep = keep[lv["tree"]]
        if not node_keep.any():
            break
        is_op = lv["is_op"]
        levels.append(
            {
                "tree": lv["tree"][node_keep],
                "is_op": is_op[node_keep],
                "k": lv["k"][node_keep[is_op]],
                "op": lv["op"][node_keep[is_op]],
                "leaf": lv["leaf"][node_keep[~is_op]],
            }
        )
    return Trees(trees.n_trees, levels)


def _group_starts(k: np.ndarray) -> np.ndarray:
    """Start of each operator's children in the next level (children are contiguous)."""
    starts = np.zeros(len(k), dtype=np.int64)
    np.cumsum(k[:-1], out=starts[1:])
    return starts


def evaluate(trees: Trees) -> list[np.ndarray]:
    """Value (0..9) of every node, per level, bottom-up; index 0 holds the roots' values."""
    values: list[np.ndarray] = [np.empty(0)] * len(trees.levels)
    below: np.ndarray | None = None
    for d in range(len(trees.levels) - 1, -1, -1):
        lv = trees.levels[d]
        val = np.empty(len(lv["tree"]), dtype=np.int64)
        val[~lv["is_op"]] = lv["leaf"]
        k, op = lv["k"], lv["op"]
        if len(k):
            assert below is not None
            starts = _group_starts(k)
            res = np.empty(len(k), dtype=np.int64)
            for code, ufunc in ((MIN, np.minimum), (MAX, np.maximum)):
                sel = op == code
                res[sel] = ufunc.reduceat(below, starts)[sel]
            sel = op == SM
            res[sel] = np.add.reduceat(below, starts)[sel] % 10
            sel = op == MED
            if sel.any():
                group = np.repeat(np.arange(len(k)), k)
                child_sel = sel[group]
                kk, gg = k[sel], group[child_sel]
                # sort each MED group's children: groups stay contiguous, values ascend inside
                sorted_vals = np.sort(gg * 16 + below[child_sel]) & 15
                s = _group_starts(kk)
                lo = sorted_vals[s + (kk - 1) // 2]
                hi = sorted_vals[s + kk // 2]
                res[sel] = (lo + hi) // 2  # int(np.median): mean of the middle two, truncated
            val[lv["is_op"]] = res
        values[d] = val
        below = val
    return values


def _prefix_table() -> tuple[np.ndarray, np.ndarray]:
    """Bytes ``"( " * (k + 1) + OP + " "`` for every (k, op), padded, and their lengths."""
    width = 2 * (MAX_ARGS + 1) + max(map(len, OPERATORS)) + 1
    table = np.full((MAX_ARGS + 1, len(OPERATORS), width), ord(" "), dtype=np.uint8)
    lengths = np.zeros((MAX_ARGS + 1, len(OPERATORS)), dtype=np.int64)
    for k in range(2, MAX_ARGS + 1):
        for o, name in enumerate(OPERATORS):
            text = ("( " * (k + 1) + name + " ").encode()
            table[k, o, : len(text)] = np.frombuffer(text, dtype=np.uint8)
            lengths[k, o] = len(text)
    return table, lengths


_PREFIX, _PREFIX_LEN = _prefix_table()
_OP_WIDTH = np.array([len(name) for name in OPERATORS], dtype=np.int64)


def _scatter(buf: np.ndarray, starts: np.ndarray, text: bytes) -> None:
    """Write the same ``text`` at every offset in ``starts``."""
    pattern = np.frombuffer(text, dtype=np.uint8)
    for i, byte in enumerate(pattern):
        buf[starts + i] = byte


def serialise(trees: Trees, values: list[np.ndarray]) -> bytes:
    """TSV lines ``<source>\\t<label>\\n`` of every tree, in tree order, as one buffer.

    An operator node with ``k`` children prints as ``"( " * (k+1) + OP + " "``, then its
    children separated by ``" ) "``, then ``" ) ] )"``; a leaf prints as its digit. Byte
    sizes are summed bottom-up and offsets assigned top-down, then every piece is scattered.
    """
    levels = trees.levels
    if not levels:
        return b""
    sizes = _node_sizes(levels)
    buf, offset = _line_buffer(sizes[0], values[0])
    for d, lv in enumerate(levels):
        if not _write_level(buf, lv, offset, sizes[d]):
            break
        offset = _write_children(buf, lv, offset, sizes[d], sizes[d + 1])
    return buf.tobytes()


def _node_sizes(levels: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """Serialised byte size of every node, level by level, summed bottom-up."""
    sizes: list[np.ndarray] = [np.empty(0, dtype=np.int64)] * len(levels)
    below: np.ndarray | None = None
    for d in range(len(levels) - 1, -1, -1):
        lv = levels[d]
        size = np.ones(len(lv["tree"]), dtype=np.int64)
        k = lv["k"]
        if len(k):
            assert below is not None
            child_sum = np.add.reduceat(below, _group_starts(k))
            size[lv["is_op"]] = 5 * k + _OP_WIDTH[lv["op"]] + 6 + child_sum
        sizes[d] = size
        below = size
    return sizes


def _line_buffer(root_size: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A blank buffer holding one line per tree, each ending
    with ``"\\t<digit>\\n"``; and each root's offset."""
    line_len = root_size + 3
    line_start = np.zeros(len(line_len), dtype=np.int64)
    np.cumsum(line_len[:-1], out=line_start[1:])
    buf = np.full(int(line_len.sum()), ord(" "), dtype=np.uint8)
    root_end = line_start + root_size
    buf[root_end] = ord("\t")
    buf[root_end + 1] = ord("0") + label
    buf[root_end + 2] = ord("\n")
    return buf, line_start


def _write_level(
    buf: np.ndarray, lv: dict[str, np.ndarray], offset: np.ndarray, size: np.ndarray
) -> bool:
    """Leaf digits, operator prefixes ``"( ( ... [OP "`` and closings
    ``"] )"`` of one level; False when it has no operators."""
    is_op, k, op = lv["is_op"], lv["k"], lv["op"]
    buf[offset[~is_op]] = ord("0") + lv["leaf"]
    if not len(k):
        return False
    op_off = offset[is_op]
    plen = _PREFIX_LEN[k, op]
    rep = np.repeat(np.arange(len(k)), plen)
    within = np.arange(len(rep)) - np.repeat(_group_starts(plen), plen)
    buf[op_off[rep] + within] = _PREFIX[k[rep], op[rep], within]
    _scatter(buf, op_off + size[is_op] - 3, b"] )")
    return True


def _write_children(
    buf: np.ndarray,
    lv: dict[str, np.ndarray],
    offset: np.ndarray,
    size: np.ndarray,
    child_size: np.ndarray,
) -> np.ndarray:
    """Offsets of the next level's nodes: the first child at the end of its parent's prefix, each
    next after the previous + ``" ) "`` (written here)."""
    is_op, k, op = lv["is_op"], lv["k"], lv["op"]
    step = child_size + 3
    cum = np.cumsum(step) - step  # exclusive cumsum over the whole level
    starts = _group_starts(k)
    group = np.repeat(np.arange(len(k)), k)
    child_off = (offset[is_op] + _PREFIX_LEN[k, op])[group] + cum - cum[starts][group]
    _scatter(buf, child_off + child_size, b" ) ")
    return child_off


def generate_chunk(seed: int, chunk: int, min_length: int, max_length: int) -> bytes:
    """TSV lines of the kept draws of chunk ``chunk`` (in draw order), seeded by (seed, chunk)."""
    rng = np.random.default_rng([seed, chunk])
    trees, length = simulate(rng, CHUNK_DRAWS, max_length)
    keep = (length > min_length) & (length < max_length)
    kept = select(trees, keep)
    return serialise(kept, evaluate(kept))


def _chunk_task(args: tuple[int, int, int, int]) -> bytes:
    return generate_chunk(*args)


def iter_chunks(seed: int, min_length: int, max_length: int, workers: int) -> Iterator[bytes]:
    """Chunks 0, 1, 2, ... in order (endless); ``workers > 1`` computes ahead in a process pool."""
    if workers <= 1:
        for chunk in itertools.count():
            yield generate_chunk(seed, chunk, min_length, max_length)
        return
    # fork on Linux: workers start at once and need no importable __main__ (stdin, notebooks)
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(workers) as pool:
        pending: deque = deque()
        chunk = 0
        while True:
            while len(pending) < 2 * workers:
                pending.append(
                    pool.apply_async(_chunk_task, ((seed, chunk, min_length, max_length),))
                )
                chunk += 1
            yield pending.popleft().get()


@dataclass
class GenStats:
    """What a generation run drew: ``kept / draws`` is the acceptance rate."""

    draws: int = 0
    kept: int = 0  # draws within the length bounds (duplicates included)
    duplicates: int = 0


STALL_CHUNKS = 64  # chunks in a row without a new expression before giving up


def unique_lines(chunks: Iterator[bytes], stats: GenStats, bounds: str) -> Iterator[bytes]:
    """TSV lines (without newline) of first occurrences of each expression, in chunk order."""
    seen: set[bytes] = set()
    stall = 0
    for blob in chunks:
        stats.draws += CHUNK_DRAWS
        lines = blob.split(b"\n")[:-1]
        stats.kept += len(lines)
        new = 0
        for line in lines:
            digest = hashlib.blake2b(line[:-2], digest_size=16).digest()  # the source only
            if digest in seen:
                stats.duplicates += 1
                continue
            seen.add(digest)
            new += 1
            yield line
        stall = 0 if new else stall + 1
        if stall >= STALL_CHUNKS:
            raise ValueError(
                f"only {len(seen)} distinct expressions with {bounds} after {stats.draws} draws;"
                " widen the length bounds or ask for fewer examples"
            )


def generate(
    out_dir: str | Path,
    sizes: dict[str, int],
    *,
    seed: int = 0,
    min_length: int = 500,
    max_length: int = 2000,
    workers: int = 1,
    progress: bool = True,
) -> GenStats:
    """Write ``basic_{train,val,test}.tsv`` into ``out_dir`` in the LRA release format.

    One pool of unique expressions is drawn and cut in order into train, val and test
    (``sizes`` gives each split's count), so the splits never overlap.
    """
    from tqdm import tqdm

    if not 0 <= min_length < max_length:
        raise ValueError(f"need 0 <= min_length < max_length, got {min_length} and {max_length}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = GenStats()
    bounds = f"{min_length} < length < {max_length}"
    with ExitStack() as stack:
        chunks = iter_chunks(seed, min_length, max_length, workers)
        stack.callback(chunks.close)
        stream = unique_lines(chunks, stats, bounds)
        bar = stack.enter_context(
            tqdm(
                total=sum(sizes.values()),
                desc="listops",
                unit="ex",
                disable=not progress,
                dynamic_ncols=True,
            )
        )
        for split, name in SPLIT_FILES.items():
            if split not in sizes:
                continue
            with open(out / name, "wb") as f:
                f.write(HEADER)
                for _ in range(sizes[split]):
                    f.write(next(stream) + b"\n")
                    bar.update()
                    if bar.n % 1000 == 0 and stats.draws:
                        bar.set_postfix(accept=f"{stats.kept / stats.draws:.1%}", refresh=False)
    return stats
