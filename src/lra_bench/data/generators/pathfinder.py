"""Pathfinder / Path-X generator (after Linsley et al. 2018, the ``snakes2`` code used by LRA).

An image holds two target "snakes" of ``contour_length`` dashes, seeded ``seed_distance``
apart and grown alternately, plus distractor snakes of ``contour_length // 3`` dashes.
Each next dash is placed on a circle of radius L+m around a pivot L+2m ahead of the
previous one, drawn with weight (1 - dilated occupancy) * max(cos(min(|turn| * continuity,
pi/2)), 0)^2, and rejected if its margin-dilated mask overlaps what is already drawn.
Two discs mark the free end of one target snake and the far end of the same snake
(label 1) or of the other one (label 0).

The overlap rules are the original's, gaps included: a new dash is not tested against its
own snake's newest dash nor the other target's newest, seed dashes only by the seed test,
and the first target's last dash does not block distractors. The seed test is the
original's too (``seed_rule="original"``): a start point is admissible when the pixels
the dash's core kernel reads, one pixel down and right of the dash, are free; and a
heading for which that kernel reads only outside the image from some pixel fails the
attempt (the original's OpenCV border trips its "mystery" guard). At PF32 this admits 30
of 360 headings for a distractor's and the first target's first dash, so about 1.24 of
the 5 distractors are placed per image. ``seed_rule="unrestricted"`` drops that guard
(the original with a zero border): a denser image, a different task from the released one.

Speed comes from working in small windows (dash patches rendered once per orientation,
occupancy read only around the candidate points) instead of full-image renders and
dilations at every step; the restarts of the original (a failed target snake starts the
image over) are kept, as they shape the distribution.

Images are seeded by (seed, index), so files are byte-identical for any number of
worker processes. Output follows the LRA release layout: ``imgs/<batch>/sample_<i>.png``
and ``metadata/<batch>.npy`` (a text file, one line per image).
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from lra_bench.data.generators.pathfinder_draw import (
    TAKEN_LEVEL,
    DashPatch,
    dash_patch,
    disc_offsets,
    flip,
    marker_patch,
    to_uint8,
    translate,
)
from lra_bench.io import atomic_write_text

GENERATOR_VERSION = 3  # bump when the images or labels for given settings change
DIFFICULTY_LENGTH = {"easy": 6, "intermediate": 9, "hard": 14}
# Folder names of the LRA release (its "easy" set is the original's baseline).
DIFFICULTY_FOLDER = {
    "easy": "curv_baseline",
    "intermediate": "curv_contour_length_9",
    "hard": "curv_contour_length_14",
}
BATCH_SIZE = 1000  # images per imgs/<batch> folder and metadata file, as in the release
MAX_TARGET_ATTEMPTS = 100_000  # a guard against impossible settings, far above what presets need


@dataclass(frozen=True)
class PathfinderParams:
    """Every parameter that shapes a Pathfinder image."""

    image_size: int
    contour_length: int
    paddle_length: int
    paddle_thickness: float
    margins: tuple[int, ...]  # one drawn per image
    seed_distance: int
    marker_radius: float
    continuity: float
    num_distractors: int
    target_contrast: float  # intensity of target dashes relative to the markers (1.0)
    distractor_contrast: float
    padding: int = 1
    antialias: int = 2
    max_paddle_retrial: int = 2
    max_distractor_retrial: int = 4
    n_contrasts: int = 1  # metadata field: number of per-dash contrast levels
    seed_rule: str = "original"  # "original" | "unrestricted" (see SEED_RULES)

    @property
    def distractor_length(self) -> int:
        return self.contour_length // 3


# LRA's settings (lra_benchmarks/data/pathfinder.py): paddle length, thickness, margins,
# seed distance, marker radius, continuity, distractor budget (total distractor dashes),
# target contrast, distractor contrast, padding. The original scales a target dash by
# paddle contrast x snake contrast and a distractor dash by the snake contrast alone, so
# PF32 (snake_contrast_list=[2], paddle_contrast_list=[0.75]) gives 1.5 and 2.0; the other
# sizes keep the default paddle contrast 1 (PF64 0.8, PF128 0.9, PF256 1.0).
_PRESETS: dict[int, tuple] = {
    32: (2, 0.5, (1,), 7, 1.5, 1.0, 20, 1.5, 2.0, 1),
    64: (5, 1.0, (1,), 12, 2.5, 1.8, 22, 0.8, 0.8, 1),
    128: (5, 1.5, (2, 3), 20, 3.0, 1.8, 35, 0.9, 0.9, 1),
    256: (5, 2.0, (3,), 27, 5.0, 1.8, 30, 1.0, 1.0, 22),
}
IMAGE_SIZES = tuple(_PRESETS)
SEED_RULES = ("original", "unrestricted")


def preset(
    image_size: int, difficulty: str = "hard", seed_rule: str = "original"
) -> PathfinderParams:
    """The LRA parameter set for a resolution (32, 64, 128 = Path-X, 256) and difficulty."""
    if seed_rule not in SEED_RULES:
        raise ValueError(f"unknown seed rule {seed_rule!r}; choose one of {', '.join(SEED_RULES)}")
    if image_size not in _PRESETS:
        raise ValueError(
            f"no Pathfinder preset for {image_size}x{image_size}; choose one of {sorted(_PRESETS)}"
        )
    if difficulty not in DIFFICULTY_LENGTH:
        raise ValueError(
            f"unknown difficulty {difficulty!r}; choose one of {', '.join(DIFFICULTY_LENGTH)}"
        )
    length, thick, margins, seed_d, radius, cont, budget, c_t, c_d, pad = _PRESETS[image_size]
    contour = DIFFICULTY_LENGTH[difficulty]
    return PathfinderParams(
        image_size=image_size,
        contour_length=contour,
        paddle_length=length,
        paddle_thickness=thick,
        margins=margins,
        seed_distance=seed_d,
        marker_radius=radius,
        continuity=cont,
        num_distractors=budget // (contour // 3),
        target_contrast=c_t,
        distractor_contrast=c_d,
        padding=pad,
        seed_rule=seed_rule,
    )


# ----------------------------------------------------------------------------- geometry


@dataclass
class Dash:
    """A drawn dash: its ends ``a`` -> ``b`` in the snake's growth order, (y, x) pixels, and
    how it was drawn: from pixel ``start`` along ``angle`` (radians, y down)."""

    a: tuple[float, float]
    b: tuple[float, float]
    start: tuple[int, int]
    angle: float


@dataclass
class Snake:
    kind: str  # "target" | "distractor"
    dashes: list[Dash] = field(default_factory=list)

    @property
    def ends(self) -> tuple[tuple[float, float], tuple[float, float]]:
        return self.dashes[0].a, self.dashes[-1].b


@dataclass
class PathfinderSample:
    """One generated image with the geometry it was drawn from."""

    image: np.ndarray  # (H, W) uint8
    label: int  # 1: both markers on one snake
    margin: int
    snakes: list[Snake]  # the two targets first, then the distractors
    markers: tuple[tuple[int, int], tuple[int, int]]  # (origin, terminal) centres, (y, x)
    marked: tuple[int, int]  # indices into ``snakes`` of the snakes the markers sit on


class _Ring:
    """The candidate heads around a pivot, and all that follows from picking one.

    As in the original, candidates are the distinct integer offsets of points one pixel of
    arc apart on a circle of radius L+m; choosing candidate ``k`` fixes the new heading, the
    dash drawn back from the head towards the pivot and the turn weights of the following
    step, so these are tabulated. (The next pivot, L+2m further along the heading, is
    rounded up from absolute coordinates as in the original, so it is not.)
    ``near[k]`` lists the flat offsets (row stride ``stride``) of the margin disc around
    candidate ``k``, where its dilated occupancy is read.
    """

    def __init__(self, params: PathfinderParams, margin: int, stride: int):
        L, self.continuity = params.paddle_length, params.continuity
        radius, self.reach = L + margin, L + 2 * margin
        step = 360.0 / (2 * radius * math.pi)
        rad = np.arange(0, 360, step) * math.pi / 180
        ring = np.stack([np.floor(radius * np.sin(rad)), np.floor(radius * np.cos(rad))], 1)
        offs = np.unique(ring.astype(int), axis=0)
        self.angles = np.arctan2(offs[:, 0], offs[:, 1])
        self.dy, self.dx = offs[:, 0].tolist(), offs[:, 1].tolist()
        disc = disc_offsets(float(margin))
        self.near = (offs[:, 0] * stride + offs[:, 1])[:, None] + (
            disc[:, 0] * stride + disc[:, 1]
        )[None, :]
        self.turn = [self.turn_weights(a) for a in self.angles]
        self.back = back = [flip(float(a)) for a in self.angles]
        self.patches = [
            dash_patch(a, L, params.paddle_thickness, margin, params.antialias) for a in back
        ]
        self.ends = [(L * math.sin(a), L * math.cos(a)) for a in back]

    def turn_weights(self, heading: float) -> np.ndarray:
        """max(cos(min(|turn| * continuity, pi/2)), 0)^2 for every candidate."""
        turn = np.abs(self.angles - heading)
        turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * self.continuity, math.pi / 2)
        return np.maximum(np.cos(turn), 0.0) ** 2


@lru_cache(maxsize=64)
def _ring(params: PathfinderParams, margin: int, stride: int) -> _Ring:
    return _Ring(params, margin, stride)


class _Occupancy:
    """Where dashes already are: their margin-dilated masks as 0..255 levels.

    The array is padded by ``pad`` pixels that read "full", so that candidate points never
    leave it and out-of-image candidates get zero weight, as in the original. (A disc that
    reaches outside the image also covers the image's full padding band, so reading the
    outside as full does not change any dilated value inside.) Tests and updates are
    clipped to the image."""

    def __init__(self, occ: np.ndarray, n: int, pad: int):
        self.occ, self.n, self.pad = occ, n, pad
        self.flat = occ.reshape(-1)  # a view, for reads at flat offsets

    @classmethod
    def fresh(cls, n: int, pad: int, padding: int) -> _Occupancy:
        return cls(_fresh_array(n, pad, padding).copy(), n, pad)

    def copy(self) -> _Occupancy:
        return _Occupancy(self.occ.copy(), self.n, self.pad)

    def _windows(
        self, r: int, y: int, x: int
    ) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
        """Slices of the occupancy and of a radius-``r`` patch at (y, x), clipped to the image."""
        n, p = self.n, self.pad
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, n), max(x - r, 0), min(x + r + 1, n)
        if y0 >= y1 or x0 >= x1:
            return None
        return (slice(y0 + p, y1 + p), slice(x0 + p, x1 + p)), (
            slice(y0 - y + r, y1 - y + r),
            slice(x0 - x + r, x1 - x + r),
        )

    def fits(self, patch: DashPatch, y: int, x: int) -> bool:
        """False when the dash's mask plus the occupancy reaches 1.8 anywhere in the image."""
        r, n, p = patch.radius, self.n, self.pad
        if r <= y < n - r and r <= x < n - r:  # the usual case: the patch is inside the image
            return not (
                self.occ[y - r + p : y + r + 1 + p, x - r + p : x + r + 1 + p] >= patch.limit
            ).any()
        w = self._windows(r, y, x)
        return w is None or not (self.occ[w[0]] >= patch.limit[w[1]]).any()

    def add(self, patch: DashPatch, y: int, x: int) -> None:
        r, n, p = patch.radius, self.n, self.pad
        if r <= y < n - r and r <= x < n - r:
            view = self.occ[y - r + p : y + r + 1 + p, x - r + p : x + r + 1 + p]
            np.maximum(view, patch.mask, out=view)
            return
        w = self._windows(r, y, x)
        if w is not None:
            view = self.occ[w[0]]
            np.maximum(view, patch.mask[w[1]], out=view)

    def free_fraction(self) -> float:
        p, n = self.pad, self.n
        return float(np.mean(self.occ[p : p + n, p : p + n] < TAKEN_LEVEL))


@lru_cache(maxsize=64)
def _fresh_array(n: int, pad: int, padding: int) -> np.ndarray:
    """Empty occupancy: the image's padding band and everything outside the image are full."""
    occ = np.full((n + 2 * pad, n + 2 * pad), 255, dtype=np.uint8)
    occ[pad + padding : pad + n - padding, pad + padding : pad + n - padding] = 0
    occ.setflags(write=False)
    return occ


@lru_cache(maxsize=4096)
def _blocked(taps: bytes, n: int) -> bool:
    offsets = np.frombuffer(taps, dtype=np.int64).reshape(-1, 2)
    pos = np.arange(n)
    in_y = (pos[None, :] + offsets[:, :1] >= 0) & (pos[None, :] + offsets[:, :1] < n)
    in_x = (pos[None, :] + offsets[:, 1:] >= 0) & (pos[None, :] + offsets[:, 1:] < n)
    reads_inside = (in_y[:, :, None] & in_x[:, None, :]).any(axis=0)
    return not reads_inside.all()


def seed_blocked(patch: DashPatch, n: int) -> bool:
    """True when some pixel of an n x n image has every tap of ``patch`` outside the image.

    The original dilates its float occupancy with OpenCV, whose default border for a float
    image is -DBL_MAX: at such a pixel the dilated value is -1.8e308, its guard ``min < 0``
    (commented 'mystery') then reports no free start point at all, and the seed attempt
    fails whatever the occupancy. This depends only on the heading (through the taps) and
    the image size: at PF32 only headings -150 .. -121 degrees pass.
    """
    return _blocked(np.ascontiguousarray(patch.taps, dtype=np.int64).tobytes(), n)


@dataclass
class _Growth:
    """A snake being grown: its pivot, its heading (towards the next pivot), the turn weights
    of its next dash, and its newest dash (which does not block the next one)."""

    snake: Snake
    pivot: tuple[int, int]
    heading: float
    turn: np.ndarray
    pending: tuple[DashPatch, int, int]


class _Painter:
    """Samples dashes for one image: shared parameters, random stream and drawn strokes."""

    def __init__(self, params: PathfinderParams, margin: int, rng: np.random.Generator):
        self.p, self.margin, self.rng = params, margin, rng
        self.n = params.image_size
        L = params.paddle_length
        # a pivot lies at most L+2m+1 outside the image (one step from an inside one), and
        # the occupancy is read up to L+m+1 (candidate) plus m (its disc) beyond it
        self.pad = 2 * L + 4 * margin + 3
        self.stride = self.n + 2 * self.pad
        self.ring = _ring(params, margin, self.stride)
        self.strokes: list[tuple[DashPatch, int, int, float]] = []

    def fresh(self) -> _Occupancy:
        return _Occupancy.fresh(self.n, self.pad, self.p.padding)

    def dash(self, angle: float) -> DashPatch:
        p = self.p
        return dash_patch(angle, p.paddle_length, p.paddle_thickness, self.margin, p.antialias)

    def inside(self, *points: tuple[int, int]) -> bool:
        return all(0 <= y < self.n and 0 <= x < self.n for y, x in points)

    def random_angle(self) -> float:
        return int(self.rng.integers(-180, 180)) * math.pi / 180

    def _site(self, occ: _Occupancy, patch: DashPatch, frame: int) -> tuple[int, int] | None:
        """A start point drawn uniformly among the admissible ones (None when there is none).

        As the original's seed test: a start point is admissible when none of the pixels its
        dash's taps read is taken, a pixel being taken when it lies within ``frame`` pixels
        of the border or holds occupancy above 0.3; taps outside the image are not read.
        """
        n, r, pad = self.n, patch.radius + 1, occ.pad
        taken = np.zeros((n + 2 * r, n + 2 * r), dtype=bool)
        taken[r : r + n, r : r + n] = True
        inner = slice(frame, n - frame)
        if frame < n - frame:
            taken[r + frame : r + n - frame, r + frame : r + n - frame] = (
                occ.occ[pad:, pad:][inner, inner] >= TAKEN_LEVEL
            )
        blocked = np.zeros((n, n), dtype=bool)
        for ty, tx in patch.taps:
            blocked |= taken[r + ty : r + ty + n, r + tx : r + tx + n]
        free = np.flatnonzero(~blocked)
        if len(free) == 0:
            return None
        return divmod(int(free[self.rng.integers(len(free))]), n)

    def seed(
        self, occ: _Occupancy, frame: int
    ) -> tuple[DashPatch, tuple[int, int], float, tuple[int, int]] | None:
        """A snake's first dash (original: seed_snake): random heading, uniform admissible start.

        Under the original rule a heading whose taps all leave the image from some pixel
        ends the attempt (``seed_blocked``).
        """
        p = self.p
        for _ in range(p.max_paddle_retrial + 1):
            angle = self.random_angle()
            patch = self.dash(angle)
            if p.seed_rule == "original" and seed_blocked(patch, self.n):
                return None
            tail = self._site(occ, patch, frame)
            if tail is None:
                return None
            head = translate(*tail, angle, p.paddle_length)
            pivot = translate(*head, flip(angle), p.paddle_length + self.margin)
            if self.inside(head, pivot):
                return patch, tail, angle, pivot
        return None

    def start(
        self,
        kind: str,
        patch: DashPatch,
        tail: tuple[int, int],
        angle: float,
        pivot: tuple[int, int],
    ) -> _Growth:
        """A snake made of its seed dash, ready to grow."""
        L = self.p.paddle_length
        b = (tail[0] + L * math.sin(angle), tail[1] + L * math.cos(angle))
        dash = Dash(a=(float(tail[0]), float(tail[1])), b=b, start=tail, angle=angle)
        return _Growth(
            Snake(kind, [dash]), pivot, angle, self.ring.turn_weights(angle), (patch, *tail)
        )

    def extend(
        self, g: _Growth, occ: _Occupancy, contrast: float
    ) -> tuple[DashPatch, int, int] | None:
        """Place a snake's next dash (original: extend_snake); None at a dead end.

        The new dash is tested against ``occ``, which must not hold the snake's own newest
        dash; on success that dash is added to ``occ`` and the new one becomes pending.
        """
        ring, n = self.ring, self.n
        py, px = translate(*g.pivot, g.heading, ring.reach)
        base = (py + self.pad) * self.stride + px + self.pad
        dilated = np.maximum.reduce(occ.flat[ring.near + base], axis=1)
        cmf = ((255 - dilated) * g.turn).cumsum()
        total = float(cmf[-1])
        if total < 255e-4:  # the original's "sum of weights < 1e-4", in 0..255 levels
            return None
        last = len(cmf) - 1
        for u in self.rng.random(self.p.max_paddle_retrial + 1):
            k = min(int(cmf.searchsorted(u * total, side="right")), last)
            hy, hx = py + ring.dy[k], px + ring.dx[k]
            if 0 <= hy < n and 0 <= hx < n and occ.fits(ring.patches[k], hy, hx):
                break
        else:
            return None
        occ.add(*g.pending)  # the predecessor now blocks later dashes
        patch = ring.patches[k]
        self.strokes.append((patch, hy, hx, contrast))
        ty, tx = ring.ends[k]
        g.snake.dashes.append(
            Dash(a=(hy + ty, hx + tx), b=(float(hy), float(hx)), start=(hy, hx), angle=ring.back[k])
        )
        g.pivot, g.heading, g.turn, g.pending = (
            (py, px),
            float(ring.angles[k]),
            ring.turn[k],
            (patch, hy, hx),
        )
        return g.pending


def _two_targets(pt: _Painter) -> tuple[list[_Growth], _Occupancy] | None:
    """Seed two snakes ``seed_distance`` apart and grow them alternately (original: two_snakes).

    As in the original, both grow on one occupancy, to which a dash is added when its
    successor is placed: a new dash is tested against everything but its own snake's newest
    dash and the other snake's newest, and the second seed is only required to lie inside.
    """
    p, rng = pt.p, pt.rng
    base = pt.fresh()
    first = pt.seed(base, frame=2 * p.seed_distance)
    if first is None:
        return None
    patch1, tail1, angle1, pivot1 = first
    for _ in range(p.max_paddle_retrial + 1):
        angle2 = pt.random_angle()
        where = int(rng.integers(0, 360)) * math.pi / 180
        tail2 = (
            int(np.round(tail1[0] + p.seed_distance * math.sin(where))),
            int(np.round(tail1[1] + p.seed_distance * math.cos(where))),
        )
        head2 = translate(*tail2, angle2, p.paddle_length)
        pivot2 = translate(*head2, flip(angle2), p.paddle_length + pt.margin)
        if pt.inside(tail2, head2, pivot2):
            break
    else:
        return None
    patch2 = pt.dash(angle2)
    growths = []
    for patch, tail, angle, pivot in (
        (patch1, tail1, angle1, pivot1),
        (patch2, tail2, angle2, pivot2),
    ):
        pt.strokes.append((patch, tail[0], tail[1], p.target_contrast))
        growths.append(pt.start("target", patch, tail, angle, pivot))
    occ = base
    for _ in range(p.contour_length - 1):
        for g in growths:
            if pt.extend(g, occ, p.target_contrast) is None:
                return None
    occ.add(*growths[1].pending)  # as the original: the first target's last dash is left out
    return growths, occ


def _distractor(pt: _Painter, occ: _Occupancy) -> tuple[Snake, _Occupancy] | None:
    """One short snake on a copy of ``occ``, or None when
    it cannot be completed (original: make_snake)."""
    p = pt.p
    if occ.free_fraction() < 0.01:
        return None
    work = occ.copy()
    n_strokes = len(pt.strokes)
    seed = pt.seed(work, frame=1)
    if seed is not None:
        patch, tail, angle, pivot = seed
        pt.strokes.append((patch, tail[0], tail[1], p.distractor_contrast))
        g = pt.start("distractor", patch, tail, angle, pivot)
        if all(
            pt.extend(g, work, p.distractor_contrast) is not None
            for _ in range(p.distractor_length - 1)
        ):
            work.add(*g.pending)
            return g.snake, work
    del pt.strokes[n_strokes:]
    return None


def _render(pt: _Painter, markers: Sequence[tuple[int, int]]) -> np.ndarray:
    """Draw the strokes and the marker discs, then stretch to 0..255."""
    n, p = pt.n, pt.p
    image = np.zeros((n, n))
    for patch, y, x, contrast in pt.strokes:
        r = patch.radius
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, n), max(x - r, 0), min(x + r + 1, n)
        if y0 < y1 and x0 < x1:
            view = image[y0:y1, x0:x1]
            np.maximum(
                view,
                patch.line[y0 - y + r : y1 - y + r, x0 - x + r : x1 - x + r] * contrast,
                out=view,
            )
    for y, x in markers:
        y0, x0, disc = marker_patch(y, x, p.marker_radius, p.antialias, n)
        view = image[y0 : y0 + disc.shape[0], x0 : x0 + disc.shape[1]]
        np.maximum(view, disc, out=view)
    return to_uint8(image)


def generate_sample(params: PathfinderParams, seed: int, index: int) -> PathfinderSample:
    """Image ``index`` of the data set with generator seed ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index])
    label = int(rng.integers(0, 2))
    margin = params.margins[int(rng.integers(len(params.margins)))]
    for _ in range(MAX_TARGET_ATTEMPTS):
        pt = _Painter(params, margin, rng)
        found = _two_targets(pt)
        if found is not None:
            break
    else:
        raise RuntimeError(
            f"could not place two target snakes in {MAX_TARGET_ATTEMPTS} attempts: {params}"
        )
    growths, occ = found
    snakes = [g.snake for g in growths]
    for _ in range(params.num_distractors):
        for _ in range(params.max_distractor_retrial + 1):
            made = _distractor(pt, occ)
            if made is not None:
                snakes.append(made[0])
                occ = made[1]
                break
    origin = int(rng.integers(0, 2))
    terminal = origin if label == 1 else 1 - origin
    o_y, o_x = snakes[origin].ends[0]
    t_y, t_x = snakes[terminal].ends[1]
    markers = ((int(o_y), int(o_x)), (int(t_y), int(t_x)))
    return PathfinderSample(
        image=_render(pt, markers),
        label=label,
        margin=margin,
        snakes=snakes,
        markers=markers,
        marked=(origin, terminal),
    )


# ----------------------------------------------------------------------------- files


def metadata_line(params: PathfinderParams, batch: int, i: int, label: int, margin: int) -> str:
    """One release metadata line: ``imgs/<batch> sample_<i>.png <i> <label> <continuity>
    <contour_length> <distractor_length> <paddle_length> <paddle_thickness> <margin>
    <n_contrasts>``."""
    fields = (
        f"imgs/{batch}",
        f"sample_{i}.png",
        i,
        label,
        float(params.continuity),
        params.contour_length,
        params.distractor_length,
        params.paddle_length,
        float(params.paddle_thickness),
        margin,
        params.n_contrasts,
    )
    return " ".join(map(str, fields))


def _write_chunk(job: tuple[Path, PathfinderParams, int, range]) -> list[tuple[int, str]]:
    """Worker: render and save a run of images; return their (index, metadata line)."""
    folder, params, seed, indices = job
    out = []
    for index in indices:
        batch, i = divmod(index, BATCH_SIZE)
        sample = generate_sample(params, seed, index)
        path = folder / "imgs" / str(batch) / f"sample_{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image, mode="L").save(path, format="PNG")
        out.append((index, metadata_line(params, batch, i, sample.label, sample.margin)))
    return out


def _run_jobs(jobs: list, workers: int) -> Iterator[list[tuple[int, str]]]:
    """Results of ``_write_chunk`` over ``jobs``, in this process or a pool (any order)."""
    if (
        workers <= 1 or len(jobs) <= 1 or mp.current_process().daemon
    ):  # a pool's worker cannot fork one
        yield from map(_write_chunk, jobs)
        return
    # fork: workers inherit the loaded modules instead of importing them again
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    with mp.get_context(method).Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(_write_chunk, jobs)


def write_dataset(
    folder: str | Path,
    params: PathfinderParams,
    n: int,
    seed: int,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate ``n`` images into ``folder`` (a difficulty folder) in the release layout.

    Work is split into runs of consecutive indices over ``workers`` processes. Each image
    depends only on (seed, index), and the metadata is written in index order once every
    image exists, so the files do not depend on ``workers``.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    (folder / "metadata").mkdir(parents=True, exist_ok=True)
    chunk = max(1, min(64, n // (8 * max(workers, 1))))
    jobs = [(folder, params, seed, range(a, min(a + chunk, n))) for a in range(0, n, chunk)]
    lines: dict[int, str] = {}
    with tqdm(
        total=n, desc=f"generate pathfinder{params.image_size}", unit="img", disable=not progress
    ) as bar:
        for part in _run_jobs(jobs, workers):
            lines.update(part)
            bar.update(len(part))
    for batch in range((n + BATCH_SIZE - 1) // BATCH_SIZE):
        rows = range(batch * BATCH_SIZE, min((batch + 1) * BATCH_SIZE, n))
        target = folder / "metadata" / f"{batch}.npy"
        atomic_write_text(target, "".join(lines[k] + "\n" for k in rows))
    return folder
