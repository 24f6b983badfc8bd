"""ListOps data: generator (grammar, values, format, determinism), release reader, prepare, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lra_bench.compose import compose_config
from lra_bench.data import DataError, load_splits
from lra_bench.data import listops as lo
from lra_bench.data.generators import listops as gen

SIZES = {"train": 150, "val": 25, "test": 25}


# --- helpers ----------------------------------------------------------------------------


def forest(exprs: list) -> gen.Trees:
    """Trees from nested ``(op_name, [children])`` / digit expressions, stored level by level."""
    levels = []
    nodes = [(t, e) for t, e in enumerate(exprs)]
    while nodes:
        is_op = np.array([not isinstance(e, int) for _, e in nodes])
        levels.append(
            {
                "tree": np.array([t for t, _ in nodes], dtype=np.int64),
                "is_op": is_op,
                "k": np.array(
                    [len(e[1]) for _, e in nodes if not isinstance(e, int)], dtype=np.int64
                ),
                "op": np.array(
                    [gen.OPERATORS.index(e[0]) for _, e in nodes if not isinstance(e, int)],
                    dtype=np.int8,
                ),
                "leaf": np.array([e for _, e in nodes if isinstance(e, int)], dtype=np.int8),
            }
        )
        nodes = [(t, c) for t, e in nodes if not isinstance(e, int) for c in e[1]]
    return gen.Trees(len(exprs), levels)


def reference(source: str) -> tuple[int, int]:
    """Value and length of a release-format Source, computed recursively as LRA does."""
    tokens = [t for t in source.split() if t not in "()"]
    pos = 0

    def node() -> tuple[int, int]:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok), 1
        values, length = [], 2
        while tokens[pos] != "]":
            value, sub = node()
            values.append(value)
            length += sub
        pos += 1
        fn = {
            "[MIN": min,
            "[MAX": max,
            "[MED": lambda v: int(np.median(v)),
            "[SM": lambda v: sum(v) % 10,
        }
        return fn[tok](values), length

    result = node()
    assert pos == len(tokens)
    return result


def read_lines(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text().splitlines()
    assert lines[0] == "Source\tTarget"
    return [(src, int(tgt)) for src, tgt in (line.split("\t") for line in lines[1:])]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "w1"
    gen.generate(out, SIZES, seed=7, min_length=300, max_length=600, workers=1, progress=False)
    return out


# --- generator --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, value",
    [
        (("[MED", [1, 2]), 1),
        (("[MED", [3, 4, 8, 9]), 6),
        (("[MED", [3, 4, 6, 9]), 5),
        (("[MED", [2, 7]), 4),
        (("[MED", [9, 0, 5]), 5),
        (("[MIN", [4, 2, 8]), 2),
        (("[MAX", [4, 2, 8]), 8),
        (("[SM", [9, 8, 7]), 4),
        (("[MAX", [("[MIN", [3, 4]), ("[SM", [5, 5]), 2]), 3),
        (("[MED", [("[MAX", [1, 9]), ("[MIN", [7, 8, 9, 6]), 0, 5]), 5),
        (7, 7),
    ],
)
def test_evaluate_hand_made_trees(expr, value):
    values = gen.evaluate(forest([expr]))
    assert values[0].tolist() == [value]


def test_serialise_release_format():
    trees = forest([("[MAX", [4, 5]), 3, ("[SM", [3, ("[MIN", [1, 9])])])
    lines = gen.serialise(trees, gen.evaluate(trees)).decode().splitlines()
    assert lines == [
        "( ( ( [MAX 4 ) 5 ) ] )\t5",
        "3\t3",
        "( ( ( [SM 3 ) ( ( ( [MIN 1 ) 9 ) ] ) ) ] )\t4",
    ]


def test_chunk_values_lengths_and_format_match_reference():
    lines = gen.generate_chunk(3, 0, 100, 400).decode().splitlines()
    assert len(lines) > 100
    for line in lines:
        source, target = line.split("\t")
        value, length = reference(source)
        assert value == int(target)
        assert 100 < length < 400
        assert "  " not in source and source.count("(") == source.count(")")


def test_generated_files_respect_bounds_and_never_overlap(generated: Path):
    sources = {}
    for split, name in gen.SPLIT_FILES.items():
        rows = read_lines(generated / name)
        assert len(rows) == SIZES[split]
        for source, target in rows:
            value, length = reference(source)
            assert value == target and 300 < length < 600
        sources[split] = [s for s, _ in rows]
    everything = sum(sources.values(), [])
    assert len(set(everything)) == len(everything)


def test_generation_identical_whatever_the_worker_count(generated: Path, tmp_path: Path):
    # several chunks are needed here, so chunk order and cross-chunk deduplication matter
    big = {"train": 500, "val": 50, "test": 50}
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        stats = gen.generate(
            out, big, seed=1, min_length=1500, max_length=2000, workers=workers, progress=False
        )
        assert stats.draws > gen.CHUNK_DRAWS
        outs.append([(out / name).read_bytes() for name in gen.SPLIT_FILES.values()])
    assert outs[0] == outs[1]
    again = tmp_path / "again"
    gen.generate(again, SIZES, seed=7, min_length=300, max_length=600, workers=2, progress=False)
    for name in gen.SPLIT_FILES.values():
        assert (again / name).read_bytes() == (generated / name).read_bytes()


def test_seed_changes_the_data(generated: Path, tmp_path: Path):
    gen.generate(tmp_path, SIZES, seed=8, min_length=300, max_length=600, progress=False)
    assert (tmp_path / "basic_val.tsv").read_bytes() != (generated / "basic_val.tsv").read_bytes()


def test_impossible_bounds_fail_instead_of_looping(tmp_path: Path):
    with pytest.raises(ValueError, match="distinct expressions"):
        gen.generate(tmp_path, {"train": 50}, min_length=0, max_length=2, progress=False)


def test_statistics_match_lra():
    lines: list[str] = []
    chunk = 0
    while len(lines) < 2000:
        lines += gen.generate_chunk(0, chunk, 500, 2000).decode().splitlines()
        chunk += 1
    acceptance = len(lines) / (chunk * gen.CHUNK_DRAWS)
    assert 0.06 < acceptance < 0.11
    labels = np.array([int(line[-1]) for line in lines])
    freq = np.bincount(labels, minlength=10) / len(labels)
    assert 0.10 < freq[0] < 0.25 and 0.10 < freq[9] < 0.25
    assert all(0.04 < f < 0.13 for f in freq[1:9])
    lengths = np.array([len(lo.tokenize(line.split("\t")[0])) for line in lines])
    assert lengths.min() > 500 and lengths.max() < 2000
    q1, q2, q3 = np.percentile(lengths, [25, 50, 75])
    assert 640 < q1 < 780 and 880 < q2 < 1050 and 1220 < q3 < 1420


# --- reader -----------------------------------------------------------------------------

RELEASE_TEXT = (
    "Source\tTarget\n"
    "( ( ( [MAX 4 ) 5 ) ] )\t5\n"
    "( ( ( [SM 3 ) ( ( ( [MIN 1 ) 9 ) ] ) ) ] )\t4\n"
    "( ( ( [FIRST 2 ) 8 ) ] )\t2\n"
)


def write_release(folder: Path, text: str = RELEASE_TEXT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in gen.SPLIT_FILES.values():
        (folder / name).write_text(text)
    return folder


def test_tokenise_release_lines(tmp_path: Path):
    path = write_release(tmp_path) / "basic_train.tsv"
    ds = lo.read_tsv(path, max_len=2048)
    assert ds["label"] == [5, 4, 2]
    assert ds["input_ids"] == [
        [2, 10, 11, 5],  # [MAX 4 5 X
        [4, 9, 1, 7, 15, 5, 5],  # [SM 3 [MIN 1 9 X X
        [16, 8, 14, 5],  # unknown operator -> 16
    ]
    assert lo.read_tsv(path, max_len=3)["input_ids"][1] == [4, 9, 1]


def test_reader_accepts_crlf_and_never_modifies_the_file(tmp_path: Path):
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(RELEASE_TEXT.replace("\n", "\r\n").encode())
    before = path.read_bytes(), path.stat().st_mtime_ns
    ds = lo.read_tsv(path, max_len=2048)
    assert ds["label"] == [5, 4, 2] and ds["input_ids"][0] == [2, 10, 11, 5]
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_generated_strings_round_trip_through_the_reader(generated: Path):
    ds = lo.read_tsv(generated / "basic_test.tsv", max_len=2048)
    rows = read_lines(generated / "basic_test.tsv")
    inverse = {i + 1: tok for i, tok in enumerate(lo.TOKENS)}
    for ids, (source, _) in zip(ds["input_ids"], rows, strict=True):
        expected = [("X" if t == "]" else t) for t in source.split() if t not in "()"]
        assert [inverse[i] for i in ids] == expected
    assert ds["label"] == [t for _, t in rows]


@pytest.mark.parametrize(
    "text, lineno, expected",
    [
        ("Source\tLabel\n( ( [MAX 1 ) 2 ] )\t2\n", 1, "header"),
        (RELEASE_TEXT + "( ( [MAX 1 ) 2 ] )\n", 5, "2 tab-separated fields"),
        (RELEASE_TEXT + "a\tb\tc\n", 5, "2 tab-separated fields"),
        (RELEASE_TEXT.replace("\t4\n", "\tfour\n"), 3, "integer Target"),
        (RELEASE_TEXT.replace("\t5\n", "\t10\n"), 2, "integer Target in 0..9"),
        (RELEASE_TEXT + "( )\t3\n", 5, "non-empty Source"),
        ("Source\tTarget\n", None, "at least one example"),
    ],
)
def test_malformed_lines_name_file_and_line(
    tmp_path: Path, text: str, lineno: int | None, expected: str
):
    path = tmp_path / "basic_val.tsv"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        lo.read_tsv(path, max_len=2048)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and expected in message
    if lineno is not None:
        assert f"{path}:{lineno}:" in message


# --- prepare / load_splits --------------------------------------------------------------


def compose(tmp_path: Path, *overrides: str):
    return compose_config(
        [
            "task=listops",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.data_dir={tmp_path / 'data'}",
            *overrides,
        ]
    )


GEN = (
    "data.source=generate",
    "data.train_size=120",
    "data.val_size=20",
    "data.test_size=20",
    "data.min_length=200",
    "data.max_length=400",
    "data.gen_workers=1",
)


def test_prepare_generate_then_reuse_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    splits = load_splits(compose(tmp_path, *GEN))
    assert {k: len(v) for k, v in splits.items()} == {"train": 120, "val": 20, "test": 20}
    assert set(splits["train"].column_names) == {"input_ids", "label"}
    row = splits["val"][0]
    assert 200 < len(row["input_ids"]) < 400 and 0 <= row["label"] <= 9
    assert max(max(ids) for ids in splits["train"]["input_ids"]) <= 15
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir() if p.is_dir())
    assert len(folders) == 2 and any(f.startswith("listops-generated-") for f in folders)

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although cached")

    monkeypatch.setattr(gen, "generate", boom)
    monkeypatch.setattr(lo, "read_tsv", boom)
    again = load_splits(compose(tmp_path, *GEN, "data.gen_workers=2"))
    assert again["test"]["input_ids"] == splits["test"]["input_ids"]
    # another max_len re-reads the generated TSVs but does not regenerate them
    monkeypatch.undo()
    monkeypatch.setattr(gen, "generate", boom)
    short = load_splits(compose(tmp_path, *GEN, "task.max_len=100"))
    assert max(len(ids) for ids in short["train"]["input_ids"]) == 100


def test_prepare_release_from_data_root(tmp_path: Path):
    write_release(tmp_path / "rel" / "listops-1000")
    for root in (tmp_path / "rel", tmp_path / "rel" / "listops-1000"):
        for source in ("release", "auto"):
            splits = load_splits(compose(tmp_path, f"data.source={source}", f"data.root={root}"))
            assert splits["train"]["label"] == [5, 4, 2]


def test_prepare_release_from_data_dir_and_auto_falls_back(tmp_path: Path):
    write_release(tmp_path / "data" / "lra_release" / "listops-1000")
    assert load_splits(compose(tmp_path))["test"]["label"] == [5, 4, 2]
    empty = tmp_path / "elsewhere"
    splits = load_splits(compose(tmp_path, *GEN[1:], "data.source=auto", f"paths.data_dir={empty}"))
    assert len(splits["train"]) == 120


def test_release_cache_follows_file_changes(tmp_path: Path):
    folder = write_release(tmp_path / "rel" / "listops-1000")
    cfg = compose(tmp_path, "data.source=release", f"data.root={folder}")
    assert load_splits(cfg)["val"]["label"] == [5, 4, 2]
    (folder / "basic_val.tsv").write_text(RELEASE_TEXT + "3\t3\n")
    assert load_splits(cfg)["val"]["label"] == [5, 4, 2, 3]


def test_missing_release_says_where_and_how(tmp_path: Path):
    with pytest.raises(DataError) as info:
        load_splits(compose(tmp_path, "data.source=release"))
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "data" / "lra_release" / "listops-1000") in message
    assert "LRA_BENCH_DATA_DIR" in message and "data.source=generate" in message
    incomplete = tmp_path / "rel" / "listops-1000"
    write_release(incomplete)
    (incomplete / "basic_test.tsv").unlink()
    with pytest.raises(DataError, match="basic_test.tsv"):
        load_splits(compose(tmp_path, f"data.root={incomplete}"))


def test_limits_and_data_size(tmp_path: Path):
    overrides = [o for o in GEN if "_size" not in o]
    splits = load_splits(compose(tmp_path, *overrides, "data.size=150", "data.limit_train=10"))
    assert [len(splits[s]) for s in ("train", "val", "test")] == [10, 3, 3]


# --- command line -----------------------------------------------------------------------


@pytest.fixture
def data_cli(tmp_path: Path, run_command):
    """``python -m lra_bench.data <args>`` from ``tmp_path``, with its cache and data there."""
    env = {
        "LRA_BENCH_CACHE_DIR": str(tmp_path / "cache"),
        "LRA_BENCH_DATA_DIR": str(tmp_path / "data"),
    }
    return lambda *args: run_command("lra_bench.data", list(args), env)


def test_cli_prepares_and_leaves_no_stray_folders(tmp_path: Path, data_cli):
    status, err, out = data_cli("task=listops", *GEN)
    assert status == 0, err
    assert "train: 120" in out and "val: 20" in out and "test: 20" in out
    assert f"cache: {(tmp_path / 'cache').resolve()}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_cli_validates_the_config_first(tmp_path: Path, data_cli):
    status, err, _ = data_cli("task=listops", "data.source=hub")
    assert status == 2 and err.count("\n") == 1
    assert err.startswith("error: invalid setting data.source='hub': task listops reads")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_reports_data_errors_in_one_line(tmp_path: Path, data_cli):
    status, err, _ = data_cli("task=listops", "data.source=release")
    assert status == 2
    assert err.startswith("error: ListOps release files not found")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
