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
    write_dataset,
)
from lra_bench.data.generators.pathfinder_draw import dash_patch
from lra_bench.data.pathfinder import parse_metadata

N_SAMPLES = 200


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


# Per-image statistics of 400 PF32 "hard" images (seeds 0 and 1) of the original generator's
# published code (drewlinsley/pathfinder snakes2.py with LRA's PF32 settings, scipy.misc's
# imresize/imsave as defined there: byte scaling, Pillow's Lanczos), as (mean, sd per image).
ORIGINAL_PF32 = {
    "non-zero fraction": (0.4501, 0.0284),
    "mean pixel": (27.66, 1.815),
    "fraction >= 64": (0.1732, 0.0103),
    "fraction 1..15": (0.2325, 0.0186),
    "8-connected components of pixels > 0": (7.87, 2.95),
    "8-connected components of pixels >= 64": (18.71, 4.00),
    "label": (0.48, 0.5),
}
ORIGINAL_N = 400


def test_image_statistics_match_the_original(samples: list[PathfinderSample]) -> None:
    """Means over our samples agree with the original's within 4 standard errors of the
    difference of two sample means: 4 * sd * sqrt(1/400 + 1/len(samples))."""
    images = np.stack([s.image for s in samples])
    ours = {
        "non-zero fraction": (images > 0).mean(axis=(1, 2)),
        "mean pixel": images.mean(axis=(1, 2)),
        "fraction >= 64": (images >= 64).mean(axis=(1, 2)),
        "fraction 1..15": ((images >= 1) & (images <= 15)).mean(axis=(1, 2)),
        "8-connected components of pixels > 0": _components(images > 0),
        "8-connected components of pixels >= 64": _components(images >= 64),
        "label": np.array([s.label for s in samples]),
    }
    for name, (mean, sd) in ORIGINAL_PF32.items():
        tolerance = 4 * sd * math.sqrt(1 / ORIGINAL_N + 1 / len(samples))
        assert abs(ours[name].mean() - mean) <= tolerance, (
            name,
            ours[name].mean(),
            mean,
            tolerance,
        )
    assert (images.max(axis=(1, 2)) == 255).all()  # the original stretches every image to 0..255


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
        owners = []
        for marker in s.markers:
            hits = [
                (k, e)
                for k in (0, 1)
                for e, end in enumerate(s.snakes[k].ends)
                if math.dist(marker, end) < 0.5
            ]
            assert len(hits) == 1, (marker, hits)
            owners.append(hits[0])
        (k0, e0), (k1, e1) = owners
        assert (k0, e0) != (k1, e1)
        assert (k0 == k1) == (s.label == 1)  # label 1: both ends of one target; 0: one end of each
        assert s.marked == (k0, k1)


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
    """Largest sum of two non-neighbour dashes' margin masks on one pixel (0..255 levels).

    Every placed dash must keep this below 1.8 (459): the rule each new dash is tested by.
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
    near = _neighbours(sample)
    return max(int((stack[i] + stack[~near[i]]).max(initial=0)) for i in range(len(stack)))


def test_dashes_keep_their_margin(samples: list[PathfinderSample]) -> None:
    """Dashes never overlap (mask sums stay under 1.8) nor cross, and most keep the full
    margin (1 px) from every dash but their neighbours on their own snake."""
    params = preset(32)
    assert max(_worst_overlap(s, params) for s in samples[:60]) < 459
    closest = np.concatenate([_closest_dashes(s) for s in samples])
    assert closest.min() > 0.0  # no crossing
    assert np.median(closest) >= 1.0


def test_pathx_dashes_keep_their_margin() -> None:
    params = preset(128)
    for i in range(3):
        sample = generate_sample(params, 1, i)
        assert _worst_overlap(sample, params) < 459
        assert _closest_dashes(sample).min() >= min(params.margins)


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
    """A new generator version names a new cache folder, so images drawn by an older one are not reused."""
    import lra_bench.data.generators.pathfinder as gen
    from lra_bench.data.pathfinder import generated_folder

    before, key = generated_folder(tmp_path, preset(32), 10, 0, "hard")
    assert key["version"] == gen.GENERATOR_VERSION
    monkeypatch.setattr(gen, "GENERATOR_VERSION", gen.GENERATOR_VERSION + 1)
    after, _ = generated_folder(tmp_path, preset(32), 10, 0, "hard")
    assert before != after
