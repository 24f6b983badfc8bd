"""Image (CIFAR-10): restricted unpickling, LRA's
grayscale rule, splits, no padding, cache, errors."""

from __future__ import annotations

import pickle

import datasets
import numpy as np
import pytest

import lra_bench.data
from fixtures_data import (
    cifar_batch,
    compose,
    malicious_batch,
    png_bytes,
    smoke_overrides,
    smoke_run,
    to_planes,
    write_cifar_batches,
    write_cifar_parquet,
)
from lra_bench.data import DataError, data_settings, image, load_splits, sources
from lra_bench.data.batches import pad_sequences

PER_BATCH, N_TEST = 6, 10


@pytest.fixture
def cifar(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    return folder, write_cifar_batches(folder, PER_BATCH, N_TEST)


def reference_gray(rgb: np.ndarray) -> np.ndarray:
    """LRA's rule in float64: floor(255.5 * (w . rgb)
    / 255); returns the value before flooring too."""
    exact = (rgb.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])) * 255.5 / 255.0
    return np.floor(exact).astype(np.int64), exact


def tokens(ds: datasets.Dataset) -> np.ndarray:
    return np.array(ds["input_ids"], dtype=np.int64)


def test_grayscale_matches_lra_rule():
    pixels = np.array(
        [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [100, 150, 200]],
        dtype=np.uint8,
    )
    # green: 0.587 * 255 = 149.69 would round to 150,
    # but TF's x/255 * 255.5 then truncation gives 149
    assert image.grayscale(pixels).tolist() == [0, 255, 76, 149, 29, 141]
    rgb = np.random.default_rng(0).integers(0, 256, size=(20000, 3), dtype=np.uint8)
    want, exact = reference_gray(rgb)
    clear = (
        np.abs(exact - np.round(exact)) > 1e-4
    )  # float32 may differ only at exact integer boundaries
    assert (image.grayscale(rgb)[clear] == want[clear]).all()


def test_pickled_batches_give_gray_row_major_tokens_and_lra_splits(cifar, tmp_path):
    folder, data = cifar
    splits = image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))
    n_train = 5 * PER_BATCH
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (
        n_train - 3,
        3,
        N_TEST,
    )
    train_rgb, train_y = data["train"]
    want, _ = reference_gray(train_rgb.reshape(n_train, 1024, 3))
    got = np.concatenate([tokens(splits["train"]), tokens(splits["val"])])
    assert got.shape == (n_train, 1024)
    assert (np.abs(got - want) <= 1).all() and (got == want).mean() > 0.999
    assert (tokens(splits["val"]) == got[-3:]).all()  # dev = the last 10% of train
    assert list(splits["train"]["label"]) + list(splits["val"]["label"]) == train_y.tolist()
    assert list(splits["test"]["label"]) == data["test"][1].tolist()
    assert (got[:, : 4 * 32] == 0).all() and (
        got[:, -2 * 32 :] == 255
    ).all()  # row-major: top rows black


def test_a_single_pixel_lands_at_row_times_32_plus_column(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rgb = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    rgb[0, 2, 5] = (0, 255, 0)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(
            cifar_batch(to_planes(rgb), [3], f"training batch {i} of 5")
        )
    (folder / "test_batch").write_bytes(cifar_batch(to_planes(rgb), [4], "testing batch 1 of 1"))
    ids = image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))["test"][0][
        "input_ids"
    ]
    assert len(ids) == 1024 and ids[2 * 32 + 5] == 149 and sum(ids) == 149


def test_black_pixels_are_tokens_not_padding(cifar, tmp_path):
    folder, _ = cifar
    cfg = compose("image", folder, tmp_path / "cache")
    rows = image.prepare(data_settings(cfg))["train"][:4]["input_ids"]
    assert all(len(r) == 1024 and 0 in r for r in rows)
    ids, mask = pad_sequences(rows, cfg.task.max_len, cfg.data.mask_zero)
    assert mask is None and int((ids == 0).sum()) >= 4 * 128  # nothing is masked


def test_malicious_pickle_is_refused(cifar, tmp_path):
    folder, _ = cifar
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(malicious_batch(f"touch {marker}"))
    with pytest.raises(DataError) as err:
        image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))
    msg = str(err.value)
    assert "\n" not in msg and "data_batch_3" in msg and "refused" in msg and "system" in msg
    assert not marker.exists()


def test_wrong_batch_contents_are_named(cifar, tmp_path):
    folder, _ = cifar
    (folder / "test_batch").write_bytes(
        cifar_batch(np.zeros((2, 1024), np.uint8), [0, 1], "testing batch 1 of 1")
    )
    with pytest.raises(
        DataError, match=r"test_batch: expected a dict with b'data' = uint8 array \[N, 3072\]"
    ):
        image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 python batch"):
        image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))


def test_hub_parquet_shards_match_the_pickles(cifar, tmp_path):
    folder, data = cifar
    from_pickles = image.prepare(data_settings(compose("image", folder, tmp_path / "c1")))
    shards = write_cifar_parquet(tmp_path / "hub" / "cifar10", data)
    from_shards = image.prepare(
        data_settings(
            compose(
                "image",
                None,
                tmp_path / "c2",
                f"paths.data_dir={tmp_path / 'hub'}",
                "data.source=local",
            )
        )
    )
    assert shards.is_dir()
    for split in ("train", "val", "test"):
        assert list(from_shards[split]["input_ids"]) == list(from_pickles[split]["input_ids"])
        assert list(from_shards[split]["label"]) == list(from_pickles[split]["label"])


def test_hub_dataset_is_read_like_the_files(cifar, tmp_path, monkeypatch):
    folder, data = cifar
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}
    )
    hub = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"img": [{"bytes": png_bytes(x), "path": None} for x in rgb], "label": y.tolist()},
                features=features,
            )
            for split, (rgb, y) in data.items()
        }
    )
    monkeypatch.setattr(sources, "hub_reachable", lambda timeout=3.0: True)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda name, *a, **k: hub if name == "uoft-cs/cifar10" else None
    )
    from_hub = image.prepare(
        data_settings(compose("image", None, tmp_path / "c1", "data.source=hub"))
    )
    from_pickles = image.prepare(data_settings(compose("image", folder, tmp_path / "c2")))
    for split in ("train", "val", "test"):
        assert list(from_hub[split]["input_ids"]) == list(from_pickles[split]["input_ids"])


def test_missing_and_incomplete_sources(cifar, tmp_path):
    with pytest.raises(DataError) as err:
        image.prepare(
            data_settings(
                compose(
                    "image",
                    None,
                    tmp_path / "cache",
                    f"paths.data_dir={tmp_path / 'none'}",
                    "data.source=local",
                )
            )
        )
    msg = str(err.value)
    assert (
        "\n" not in msg
        and "CIFAR-10 not found" in msg
        and str(tmp_path / "none" / "cifar-10-batches-py") in msg
    )
    assert "cifar-10-python.tar.gz" in msg and "data.root" in msg
    folder, _ = cifar
    (folder / "data_batch_4").unlink()
    with pytest.raises(DataError, match="incomplete cifar-10-batches-py .*data_batch_4 is missing"):
        image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))


def test_second_prepare_reuses_the_cache(cifar, tmp_path, monkeypatch):
    folder, _ = cifar
    cfg = compose("image", folder, tmp_path / "cache")
    first = image.prepare(data_settings(cfg))
    monkeypatch.setattr(image, "build", lambda *a: pytest.fail("rebuilt although cached"))
    assert image.prepare(data_settings(cfg))["val"]["input_ids"] == list(first["val"]["input_ids"])


def test_smoke_training_run(cifar, tmp_path, monkeypatch):
    folder, _ = cifar
    monkeypatch.setitem(lra_bench.data.TASK_MODULES, "image", "lra_bench.data.image")
    cfg = compose("image", folder, tmp_path / "cache", *smoke_overrides(tmp_path))
    assert len(load_splits(cfg)["train"]) == 5 * PER_BATCH - 3
    result = smoke_run(cfg)
    assert (
        result["status"] == "complete" and result["task"] == "image" and result["max_len"] == 1024
    )


@pytest.mark.parametrize("protocol", [0, 1, 2, 4])
@pytest.mark.parametrize("key", [b"data", "data"])
def test_batches_repickled_by_python3_are_read(cifar, tmp_path, protocol, key):
    folder, images = cifar
    from lra_bench.data.image import load_batch

    original = load_batch(folder / "data_batch_2")
    labels_key = b"labels" if isinstance(key, bytes) else "labels"
    repickled = tmp_path / "data_batch_2"
    repickled.write_bytes(
        pickle.dumps(
            {key: original[0], labels_key: [int(v) for v in original[1]]}, protocol=protocol
        )
    )
    if protocol <= 2:
        assert b"_codecs" in repickled.read_bytes()  # the array bytes go through _codecs.encode
    pixels, labels = load_batch(repickled)
    assert np.array_equal(pixels, original[0]) and np.array_equal(labels, original[1])


def test_codecs_encode_is_allowed_for_latin1_only(tmp_path):
    import codecs

    from lra_bench.data.image import load_batch

    class Rot13:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Rot13(), b"labels": []}, protocol=2))
    with pytest.raises(DataError) as err:
        load_batch(path)
    assert "\n" not in str(err.value) and "data_batch_1" in str(err.value)


@pytest.mark.parametrize("protocol", [0, 2])
def test_malicious_pickle_of_old_protocols_is_refused(cifar, tmp_path, protocol):
    folder, _ = cifar
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(malicious_batch(f"touch {marker}", protocol=protocol))
    with pytest.raises(DataError) as err:
        image.prepare(data_settings(compose("image", folder, tmp_path / "cache")))
    assert "refused" in str(err.value) and "system" in str(err.value) and not marker.exists()
