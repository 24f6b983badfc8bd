"""The Pathfinder generator: image statistics, geometry, metadata and determinism."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

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
    assert (pf32.paddle_length, pf32.paddle_thickness, pf32.margins, pf32.seed_distance) == (2, 0.5, (1,), 7)
    assert (pf32.marker_radius, pf32.continuity, pf32.target_contrast, pf32.distractor_contrast) == (1.5, 1.0, 1.5, 2.0)
    assert (pathx.margins, pathx.seed_distance, pathx.marker_radius, pathx.paddle_thickness) == ((2, 3), 20, 3.0, 1.5)
    assert (pathx.continuity, pathx.num_distractors) == (1.8, 8)
    assert [preset(32, d).contour_length for d in ("easy", "intermediate", "hard")] == [6, 9, 14]


def test_images_and_labels(samples: list[PathfinderSample]) -> None:
    assert all(s.image.shape == (32, 32) and s.image.dtype == np.uint8 for s in samples)
    labels = np.array([s.label for s in samples])
    assert 0.4 < labels.mean() < 0.6
    nonzero = np.mean([(s.image > 0).mean() for s in samples])
    assert 0.2 < nonzero < 0.5, nonzero  # about a third to a half, faint antialiasing halos included
    assert all(s.image.max() == 255 for s in samples)


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
            assert all(math.dist(d1.b, d2.a) <= 2 * s.margin + 3 for d1, d2 in itertools.pairwise(sn.dashes))
        owners = []
        for marker in s.markers:
            hits = [(k, e) for k in (0, 1) for e, end in enumerate(s.snakes[k].ends) if math.dist(marker, end) < 0.5]
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

    def side(p: np.ndarray, q: np.ndarray, r: np.ndarray) -> np.ndarray:  # sign of (q - p) x (r - p)
        return np.sign((q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0]))

    a_i, b_i, a_j, b_j = a[:, None], b[:, None], a[None], b[None]
    return (side(a_i, b_i, a_j) * side(a_i, b_i, b_j) < 0) & (side(a_j, b_j, a_i) * side(a_j, b_j, b_i) < 0)


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
        patch = dash_patch(dash.angle, params.paddle_length, params.paddle_thickness, sample.margin, params.antialias)
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
    assert first[:3] == ["imgs/0", "sample_0.png", "0"] and first[4:] == ["1.0", "14", "4", "2", "0.5", "1", "1"]
    assert first[3] == str(generate_sample(params, 3, 0).label)


def test_batches_follow_the_release_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lra_bench.data.generators.pathfinder as gen

    monkeypatch.setattr(gen, "BATCH_SIZE", 4)
    folder = gen.write_dataset(tmp_path / "pf", preset(32, "easy"), 6, seed=0, workers=1, progress=False)
    assert sorted(p.name for p in (folder / "metadata").iterdir()) == ["0.npy", "1.npy"]
    assert sorted(p.name for p in (folder / "imgs" / "1").iterdir()) == ["sample_0.png", "sample_1.png"]
    line = (folder / "metadata" / "1.npy").read_text().splitlines()[1].split()
    assert line[:3] == ["imgs/1", "sample_1.png", "1"] and line[5:7] == ["6", "2"]
    assert BATCH_SIZE == 1000
