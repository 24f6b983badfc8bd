"""The Pathfinder generator: image statistics, geometry, metadata and determinism."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from lra_bench.data.generators.pathfinder import (
    BATCH_SIZE,
    PathfinderParams,
    PathfinderSample,
    generate_sample,
    preset,
    seed_blocked,
    write_dataset,
)
from lra_bench.data.generators.pathfinder_draw import dash_patch
from lra_bench.data.pathfinder import parse_metadata

N_SAMPLES = 60


@pytest.fixture(scope="module")
def samples() -> list[PathfinderSample]:
    params = preset(32)
    return [generate_sample(params, 7, i) for i in range(N_SAMPLES)]


def test_presets_follow_lra() -> None:
    pf32, pathx = preset(32), preset(128)
    assert (pf32.contour_length, pf32.distractor_length, pf32.num_distractors) == (14, 4, 5)
    assert (pf32.paddle_length, pf32.paddle_thickness, pf32.margins, pf32.seed_distance) == (
        2,
        0.5,
        (1,),
        7,
    )
    assert (
        pf32.marker_radius,
        pf32.continuity,
        pf32.target_contrast,
        pf32.distractor_contrast,
    ) == (1.5, 1.0, 1.5, 2.0)
    assert (pathx.margins, pathx.seed_distance, pathx.marker_radius, pathx.paddle_thickness) == (
        (2, 3),
        20,
        3.0,
        1.5,
    )
    assert (pathx.continuity, pathx.num_distractors) == (1.8, 8)
    assert [preset(32, d).contour_length for d in ("easy", "intermediate", "hard")] == [6, 9, 14]


def test_images_and_labels(samples: list[PathfinderSample]) -> None:
    assert all(s.image.shape == (32, 32) and s.image.dtype == np.uint8 for s in samples)
    labels = np.array([s.label for s in samples])
    assert 0.4 < labels.mean() < 0.6
    nonzero = np.mean([(s.image > 0).mean() for s in samples])
    assert 0.2 < nonzero < 0.5, (
        nonzero
    )  # about a third to a half, faint antialiasing halos included
    assert all(s.image.max() == 255 for s in samples)


def _components(masks: np.ndarray) -> np.ndarray:
    """Number of 8-connected components in each (H, W) boolean mask of a stack."""
    labels = np.where(masks, np.arange(1, masks[0].size + 1).reshape(masks.shape[1:]), 0)
    h, w = masks.shape[1:]
    while True:  # every pixel takes the largest label around it until nothing changes
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)))
        grown = np.max(
            [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0
        )
        grown = np.where(masks, grown, 0)
        if np.array_equal(grown, labels):
            return np.array([len(np.unique(one[one > 0])) for one in labels])
        labels = grown


# Per-image statistics of 400 PF32 "hard" images (seeds 0 and 1, 200 each) made by the
# original generator (drewlinsley/pathfinder snakes2.py + snakes.py at ab9c130, run unmodified
# under CPython 2.7.18 with numpy 1.16.6, scipy 1.2.3, Pillow 6.2.2, OpenCV 4.2.0; contour 14,
# 5 distractors of 4 dashes, snake contrast 2, paddle contrast 0.75, margin 1), as (mean, sd).
ORIGINAL_PF32 = {
    "non-zero fraction": (0.3438, 0.0389),
    "mean pixel": (20.31, 2.129),
    "fraction >= 64": (0.1264, 0.0131),
    "fraction 1..15": (0.1851, 0.0236),
    "8-connected components of pixels > 0": (8.21, 3.260),
    "8-connected components of pixels >= 64": (13.87, 3.325),
    "distractors placed": (1.238, 0.937),
    "label": (0.485, 0.500),
}
ORIGINAL_N = 400
# How many of the 5 distractors the original placed, over its 400 images (0, 1, ..., 5).
ORIGINAL_DISTRACTOR_COUNTS = (90, 168, 104, 34, 3, 1)


def _figures(samples: list[PathfinderSample]) -> dict[str, np.ndarray]:
    images = np.stack([s.image for s in samples])
    return {
        "non-zero fraction": (images > 0).mean(axis=(1, 2)),
        "mean pixel": images.mean(axis=(1, 2)),
        "fraction >= 64": (images >= 64).mean(axis=(1, 2)),
        "fraction 1..15": ((images >= 1) & (images <= 15)).mean(axis=(1, 2)),
        "8-connected components of pixels > 0": _components(images > 0),
        "8-connected components of pixels >= 64": _components(images >= 64),
        "distractors placed": np.array([len(s.snakes) - 2 for s in samples]),
        "label": np.array([s.label for s in samples]),
    }


def _off_figures(samples: list[PathfinderSample]) -> list[str]:
    """The figures whose mean over ``samples`` is off the original's by more than 4 standard
    errors of the difference of two sample means: 4 * sd * sqrt(1/400 + 1/len(samples))."""
    ours = _figures(samples)
    return [
        f"{name}: {ours[name].mean():.4g} vs {mean:.4g}"
        for name, (mean, sd) in ORIGINAL_PF32.items()
        if abs(ours[name].mean() - mean) > 4 * sd * math.sqrt(1 / ORIGINAL_N + 1 / len(samples))
    ]


def test_image_statistics_match_the_original(samples: list[PathfinderSample]) -> None:
    assert _off_figures(samples) == []
    images = np.stack([s.image for s in samples])
    assert (images.max(axis=(1, 2)) == 255).all()  # the original stretches every image to 0..255


def test_unrestricted_seeds_make_a_denser_task() -> None:
    """Negative control: without the original's seed guard, images fail the original's figures."""
    params = preset(32, seed_rule="unrestricted")
    off = _off_figures([generate_sample(params, 7, i) for i in range(N_SAMPLES)])
    assert any(name.startswith("non-zero fraction") for name in off), off
    assert any(name.startswith("distractors placed") for name in off), off


@pytest.mark.slow
def test_distractor_counts_follow_the_original() -> None:
    """Over 400 images the histogram of distractors placed per image is the original's:
    chi-square test of homogeneity (3+ pooled, 3 degrees of freedom) not rejected at 1%."""
    params = preset(32)
    placed = [len(generate_sample(params, 11, i).snakes) - 2 for i in range(ORIGINAL_N)]
    ours = np.bincount(np.minimum(placed, 3), minlength=4)
    theirs = np.array(ORIGINAL_DISTRACTOR_COUNTS[:3] + (sum(ORIGINAL_DISTRACTOR_COUNTS[3:]),))
    table = np.stack([ours, theirs]).astype(float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    assert chi2 < 11.34, (ours, theirs, chi2)  # the 99th percentile of chi-square(3)


# The same for 70 Path-X images of the original (seeds 0 and 1; window 128, margins 2 and 3,
# seed distance 20, marker radius 3, dash length 5, thickness 1.5, continuity 1.8, 8
# distractors of 4 dashes, snake contrast 0.9).
ORIGINAL_PATHX = {
    "non-zero fraction": (0.1373, 0.0059),
    "mean pixel": (7.923, 0.366),
    "fraction >= 64": (0.04091, 0.00207),
    "8-connected components of pixels > 0": (70.1, 23.3),
    "8-connected components of pixels >= 64": (57.79, 2.40),
    "distractors placed": (7.67, 0.61),
}
ORIGINAL_PATHX_N = 70


@pytest.mark.slow
def test_pathx_statistics_match_the_original() -> None:
    samples = [generate_sample(preset(128), 5, i) for i in range(24)]
    ours = _figures(samples)
    for name, (mean, sd) in ORIGINAL_PATHX.items():
        tolerance = 4 * sd * math.sqrt(1 / ORIGINAL_PATHX_N + 1 / len(samples))
        assert abs(ours[name].mean() - mean) <= tolerance, (name, ours[name].mean(), mean)


def test_seed_guard_admits_the_originals_headings() -> None:
    """Headings whose first dash the original's seed test lets through on an empty image,
    as measured on the original at PF32, PF64 and Path-X (margins 2 and 3)."""

    def admitted(n: int, length: int, thickness: float, margin: int) -> list[int]:
        return [
            deg
            for deg in range(-180, 180)
            if not seed_blocked(dash_patch(deg * math.pi / 180, length, thickness, margin, 2), n)
        ]

    assert admitted(32, 2, 0.5, 1) == list(range(-150, -120))
    assert len(admitted(64, 5, 1.0, 1)) == 95
    assert len(admitted(128, 5, 1.5, 2)) == 354
    assert len(admitted(128, 5, 1.5, 3)) == 360


def test_seed_taps_are_the_originals_kernel() -> None:
    """The pixels the original's seed test reads (its uint8 kernel, centred), for two headings."""
    taps = dash_patch(-150 * math.pi / 180, 2, 0.5, 1, 2).taps
    assert sorted(map(tuple, taps.tolist())) == [(0, -1), (0, 0), (1, 1)]
    taps = dash_patch(90 * math.pi / 180, 2, 0.5, 1, 2).taps
    assert sorted(map(tuple, taps.tolist())) == [(1, 1), (3, 1)]


def _byte_scale(values: np.ndarray) -> np.ndarray:
    """The original's conversion to bytes: minimum to 0, maximum to 255, rounded."""
    lo, hi = float(values.min()), float(values.max())
    return (
        ((values - lo) * (255.0 / (hi - lo if hi > lo else 1.0)))
        .clip(0, 255)
        .__add__(0.5)
        .astype(np.uint8)
    )


def _lanczos(values: np.ndarray, size: int) -> np.ndarray:
    """Byte-scale, then Lanczos-resample to ``size`` x ``size``, back in [0, 1]."""
    image = Image.fromarray(_byte_scale(values), mode="L").resize(
        (size, size), Image.Resampling.LANCZOS
    )
    return np.asarray(image) / 255.0


def _original_render(sample: PathfinderSample, params: PathfinderParams) -> np.ndarray:
    """The original's rendering, restated on whole images: each dash drawn in float on a
    canvas ``antialias`` times finer around its start, resampled, scaled by its contrast and
    placed; markers drawn on a whole fine image and resampled; maximum of all, byte-scaled."""
    n, aa, length = params.image_size, params.antialias, params.paddle_length
    r = length + math.ceil(params.paddle_thickness) + sample.margin
    image = np.zeros((n + 2 * r, n + 2 * r))
    for snake in sample.snakes:
        contrast = params.target_contrast if snake.kind == "target" else params.distractor_contrast
        for dash in snake.dashes:
            c = r * aa
            end = (
                math.ceil(c + length * aa * math.cos(dash.angle)),
                math.ceil(c + length * aa * math.sin(dash.angle)),
            )
            fine = Image.new("F", (2 * c + 1, 2 * c + 1), 0.0)
            ImageDraw.Draw(fine).line(
                [(c, c), end], fill=255.0, width=round(params.paddle_thickness * aa)
            )
            y, x = dash.start
            view = image[y : y + 2 * r + 1, x : x + 2 * r + 1]
            np.maximum(view, _lanczos(np.asarray(fine), 2 * r + 1) * contrast, out=view)
    image = image[r:-r, r:-r]
    fy, fx = np.mgrid[0 : n * aa, 0 : n * aa]
    for y, x in sample.markers:
        disc = ((fy - y * aa) ** 2 + (fx - x * aa) ** 2 <= (params.marker_radius * aa) ** 2).astype(
            float
        )
        image = np.maximum(image, _lanczos(disc, n))
    return _byte_scale(image)


def test_rendering_equals_the_originals(samples: list[PathfinderSample]) -> None:
    """Given the drawn geometry, every pixel is what the original's rendering makes of it."""
    params = preset(32)
    for s in samples[:80]:
        assert np.array_equal(_original_render(s, params), s.image)


def test_markers_are_drawn(samples: list[PathfinderSample]) -> None:
    for s in samples:
        for y, x in s.markers:
            around = s.image[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            assert around.max() >= 150, (s.markers, around)


def test_markers_sit_at_the_ends_of_target_snakes(samples: list[PathfinderSample]) -> None:
    for s in samples:
        assert [sn.kind for sn in s.snakes[:2]] == ["target", "target"]
        assert all(sn.kind == "distractor" for sn in s.snakes[2:])
        assert all(len(sn.dashes) == 14 for sn in s.snakes[:2])
        assert all(len(sn.dashes) == 4 for sn in s.snakes[2:])
        for sn in s.snakes:  # a chain: each dash starts about 2 margins after the previous one ends
            assert all(
                math.dist(d1.b, d2.a) <= 2 * s.margin + 3
                for d1, d2 in itertools.pairwise(sn.dashes)
            )
        k0, k1 = s.marked
        assert math.dist(s.markers[0], s.snakes[k0].ends[0]) < 0.5  # the origin's free end
        assert math.dist(s.markers[1], s.snakes[k1].ends[1]) < 0.5  # and a far end
        assert (k0 == k1) == (s.label == 1)  # label 1: both ends of one target; 0: one end of each


def _point_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from points p[i] to segments a[j]-b[j], as an (i, j) matrix."""
    d = b - a
    length2 = np.maximum((d**2).sum(-1), 1e-12)
    t = np.clip(((p[:, None, :] - a[None]) * d[None]).sum(-1) / length2[None], 0.0, 1.0)
    return np.linalg.norm(p[:, None, :] - (a[None] + t[..., None] * d[None]), axis=-1)


def _crossing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(i, j) matrix: do segments i and j properly cross?"""

    def side(
        p: np.ndarray, q: np.ndarray, r: np.ndarray
    ) -> np.ndarray:  # sign of (q - p) x (r - p)
        return np.sign(
            (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1])
            - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
        )

    a_i, b_i, a_j, b_j = a[:, None], b[:, None], a[None], b[None]
    return (side(a_i, b_i, a_j) * side(a_i, b_i, b_j) < 0) & (
        side(a_j, b_j, a_i) * side(a_j, b_j, b_i) < 0
    )


def _neighbours(sample: PathfinderSample) -> np.ndarray:
    """(i, j) matrix over all dashes: same dash or consecutive dashes of one snake."""
    snake = np.array([k for k, sn in enumerate(sample.snakes) for _ in sn.dashes])
    step = np.array([j for sn in sample.snakes for j in range(len(sn.dashes))])
    return (snake[:, None] == snake[None]) & (np.abs(step[:, None] - step[None]) <= 1)


def _closest_dashes(sample: PathfinderSample) -> np.ndarray:
    """For each dash, the distance to the closest dash that is not its neighbour on a snake."""
    a = np.array([d.a for sn in sample.snakes for d in sn.dashes])
    b = np.array([d.b for sn in sample.snakes for d in sn.dashes])
    dist = np.minimum(_point_segment(a, a, b), _point_segment(b, a, b))
    dist = np.minimum(dist, dist.T)  # for segments that do not cross, the closest is at an end
    dist[_crossing(a, b)] = 0.0
    dist[_neighbours(sample)] = np.inf
    return dist.min(axis=1)


def _worst_overlap(sample: PathfinderSample, params: PathfinderParams) -> int:
    """Largest sum of the margin masks of two non-neighbour dashes of one snake on one pixel
    (0..255 levels).

    Within a snake this stays below 1.8 (459): each new dash is tested against all earlier
    ones but its predecessor. Across snakes the original's gaps allow overlaps (a new target
    dash is not tested against the other target's newest, seeds only by the seed test).
    """
    n = params.image_size
    masks = []
    for dash in (d for sn in sample.snakes for d in sn.dashes):
        patch = dash_patch(
            dash.angle,
            params.paddle_length,
            params.paddle_thickness,
            sample.margin,
            params.antialias,
        )
        canvas = np.zeros((n + 2 * patch.radius, n + 2 * patch.radius), np.int16)
        y, x = dash.start
        canvas[y : y + patch.mask.shape[0], x : x + patch.mask.shape[1]] = patch.mask
        masks.append(canvas[patch.radius : -patch.radius, patch.radius : -patch.radius].reshape(-1))
    stack = np.stack(masks)
    snake = np.array([k for k, sn in enumerate(sample.snakes) for _ in sn.dashes])
    near = _neighbours(sample) | (snake[:, None] != snake[None])
    return max(int((stack[i] + stack[~near[i]]).max(initial=0)) for i in range(len(stack)))


def test_dashes_keep_their_margin(samples: list[PathfinderSample]) -> None:
    """Dashes of one snake never overlap (mask sums stay under 1.8). Across snakes the
    original's gaps let some touch (about 1% of dashes cross another), but most keep the
    full margin (1 px) from every dash but their neighbours on their own snake."""
    params = preset(32)
    assert max(_worst_overlap(s, params) for s in samples) < 459
    closest = np.concatenate([_closest_dashes(s) for s in samples])
    assert np.mean(closest == 0.0) < 0.05
    assert np.median(closest) >= 1.0


def test_pathx_dashes_keep_their_margin() -> None:
    params = preset(128)
    for i in range(2):
        sample = generate_sample(params, 1, i)
        assert _worst_overlap(sample, params) < 459
        assert np.median(_closest_dashes(sample)) >= min(params.margins)


def test_written_files_are_deterministic_and_parse(tmp_path: Path) -> None:
    params = preset(32)
    one = write_dataset(tmp_path / "one", params, 24, seed=3, workers=1, progress=False)
    two = write_dataset(tmp_path / "two", params, 24, seed=3, workers=2, progress=False)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert len(files) == 24 + 1
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    rows = parse_metadata(one / "metadata" / "0.npy")
    assert [rel for rel, _ in rows] == [f"imgs/0/sample_{i}.png" for i in range(24)]
    first = (one / "metadata" / "0.npy").read_text().splitlines()[0].split()
    assert first[:3] == ["imgs/0", "sample_0.png", "0"] and first[4:] == [
        "1.0",
        "14",
        "4",
        "2",
        "0.5",
        "1",
        "1",
    ]
    assert first[3] == str(generate_sample(params, 3, 0).label)


def test_batches_follow_the_release_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lra_bench.data.generators.pathfinder as gen

    monkeypatch.setattr(gen, "BATCH_SIZE", 4)
    folder = gen.write_dataset(
        tmp_path / "pf", preset(32, "easy"), 6, seed=0, workers=1, progress=False
    )
    assert sorted(p.name for p in (folder / "metadata").iterdir()) == ["0.npy", "1.npy"]
    assert sorted(p.name for p in (folder / "imgs" / "1").iterdir()) == [
        "sample_0.png",
        "sample_1.png",
    ]
    line = (folder / "metadata" / "1.npy").read_text().splitlines()[1].split()
    assert line[:3] == ["imgs/1", "sample_1.png", "1"] and line[5:7] == ["6", "2"]
    assert BATCH_SIZE == 1000


def test_cached_images_follow_the_generator_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new generator version names a new cache folder,
    so images drawn by an older one are not reused."""
    import lra_bench.data.generators.pathfinder as gen
    from lra_bench.data.pathfinder import generated_folder

    before, key = generated_folder(tmp_path, preset(32), 10, 0, "hard")
    assert key["version"] == gen.GENERATOR_VERSION
    monkeypatch.setattr(gen, "GENERATOR_VERSION", gen.GENERATOR_VERSION + 1)
    after, _ = generated_folder(tmp_path, preset(32), 10, 0, "hard")
    assert before != after


def test_seed_rule_setting_is_checked_and_changes_the_run_hash(tmp_path: Path) -> None:
    from lra_bench.compose import compose_config
    from lra_bench.config import ConfigError, config_hash, validate
    from lra_bench.data.pathfinder import generated_folder

    base = compose_config(["task=pathfinder"])
    validate(base)
    assert base.data.seed_rule == "original"
    dense = compose_config(["task=pathfinder", "data.seed_rule=unrestricted"])
    validate(dense)
    assert config_hash(dense) != config_hash(base)
    with pytest.raises(ConfigError, match="data.seed_rule"):
        validate(compose_config(["task=pathfinder", "data.seed_rule=denser"]))
    with pytest.raises(ValueError, match="seed rule"):
        preset(32, seed_rule="denser")
    one, _ = generated_folder(tmp_path, preset(32), 10, 0, "hard")
    two, _ = generated_folder(tmp_path, preset(32, seed_rule="unrestricted"), 10, 0, "hard")
    assert one != two
