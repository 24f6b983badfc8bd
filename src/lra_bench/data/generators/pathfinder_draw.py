"""Drawing primitives of the Pathfinder generator: antialiased dashes and marker discs.

As in the original generator (Linsley et al. 2018), every shape is drawn on a canvas
``aa`` times finer than the image and shrunk with Lanczos resampling. A dash lives in
a small square patch whose centre is its start point, and its look depends only on its
orientation, so each (shape, orientation) is rendered once per process and cached;
placing a dash is then a slice-wise maximum into the image.

Occupancy masks are kept as 0..255 levels (``uint8``), the values the original's
resampling produces, so overlap tests are exact integer comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

LANCZOS = Image.Resampling.LANCZOS
OVERLAP_LEVEL = 459  # mask + occupancy >= 1.8 (in 0..255 levels: 1.8 * 255) means overlap
TAKEN_LEVEL = 77  # occupancy > 0.3 counts as taken when seeding a snake


def translate(y: int, x: int, angle: float, dist: float) -> tuple[int, int]:
    """Move pixel (y, x) by ``dist`` along ``angle`` (radians, y down), rounding up as the original.

    As there, the step is added to the coordinate in floating point before rounding up, so
    the rounding error of the step counts: 8 + 4 cos(-120 deg) = 6.000000000000001 rounds up
    to 7 (a shorter dash), while 8 + 4 cos(90 deg) = 8 + 2e-16 stays 8. The result depends
    on the coordinate, not only on the step.
    """
    return math.ceil(y + dist * math.sin(angle)), math.ceil(x + dist * math.cos(angle))


def flip(angle: float) -> float:
    """The opposite orientation, kept in [-pi, pi)."""
    return angle + math.pi if angle < 0 else angle - math.pi


@lru_cache(maxsize=64)
def disc_offsets(radius: float) -> np.ndarray:
    """(K, 2) integer offsets of the pixels within ``radius`` of the origin."""
    r = int(math.floor(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    keep = yy**2 + xx**2 <= radius**2
    return np.stack([yy[keep], xx[keep]], axis=1)


def max_filter(image: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a disc; the result is ``radius`` pixels larger on every side."""
    h, w = image.shape
    out = np.zeros((h + 2 * radius, w + 2 * radius), dtype=image.dtype)
    for dy, dx in disc_offsets(float(radius)):
        view = out[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
        np.maximum(view, image, out=view)
    return out


def _shrink(fine: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Lanczos down-sampling of a 0..255 uint8 canvas to ``size`` (w, h), still 0..255 uint8."""
    return np.asarray(Image.fromarray(fine, mode="L").resize(size, LANCZOS))


@dataclass(frozen=True)
class DashPatch:
    """One rendered dash, in arrays centred on its start point.

    ``line``: intensity in [0, 1]. ``mask``: the dash dilated by the margin, 0..255 (its
    occupancy). ``limit``: the occupancy level from which a pixel under the mask overlaps
    (459 - mask). ``taps``: the pixels, relative to a start point, that the original's seed
    test reads (see ``seed_taps``). Arrays are (2 * radius + 1) square.
    """

    line: np.ndarray
    mask: np.ndarray
    limit: np.ndarray
    taps: np.ndarray
    radius: int


def seed_taps(mask: np.ndarray, length: int, margin: int) -> np.ndarray:
    """(K, 2) offsets from a seed's start point that the original's seed test reads.

    The original tests a start point by dilating the occupancy with a kernel made of the
    dash's own margin mask, cast to ``uint8``: only pixels fully on (255) survive. That mask
    is placed with its start at (c + 1, c + 1) in a (2c + 1)-square kernel, c = length +
    margin, and the kernel is anchored at its centre (c, c), so it reads the occupancy at
    ``core + (1, 1)``, one pixel down and right of where the dash lies; core pixels that fall
    outside the kernel square are lost.
    """
    r = mask.shape[0] // 2
    core = np.argwhere(mask == 255) - r
    c = length + margin
    keep = ((core >= -c - 1) & (core <= c - 1)).all(axis=1)
    return core[keep] + 1


@lru_cache(maxsize=16384)
def _dash(angle: float, length: int, thickness: float, margin: int, aa: int) -> DashPatch:
    r = length + math.ceil(thickness) + margin
    fine_size = 2 * aa * r + 1
    centre = aa * r
    hy, hx = translate(centre, centre, angle, length * aa)
    canvas = Image.new("L", (fine_size, fine_size), 0)
    ImageDraw.Draw(canvas).line([(centre, centre), (hx, hy)], fill=255, width=round(thickness * aa))
    fine = np.asarray(canvas)
    fine_mask = max_filter(np.where(fine > 0, 255, 0).astype(np.uint8), margin * aa)
    fine_mask = fine_mask[
        margin * aa : margin * aa + fine_size, margin * aa : margin * aa + fine_size
    ]
    size = (2 * r + 1, 2 * r + 1)
    line = _shrink(fine, size).astype(np.float64) / 255.0
    mask = _shrink(np.ascontiguousarray(fine_mask), size)
    patch = DashPatch(
        line=line,
        mask=mask,
        limit=(OVERLAP_LEVEL - mask.astype(np.int16)),
        taps=seed_taps(mask, length, margin),
        radius=r,
    )
    for arr in (patch.line, patch.mask, patch.limit, patch.taps):
        arr.setflags(write=False)
    return patch


def dash_patch(angle: float, length: int, thickness: float, margin: int, aa: int) -> DashPatch:
    """The cached patch of a dash of ``length`` pixels starting at the centre along ``angle``.

    Keyed by the exact angle: its last bits decide where the fine-canvas line ends.
    """
    if abs(thickness * aa - round(thickness * aa)) > 1e-9:
        raise ValueError(
            f"dash thickness {thickness} x antialias {aa} must be a whole number of pixels"
        )
    return _dash(float(angle), length, thickness, margin, aa)


def marker_patch(y: int, x: int, radius: float, aa: int, size: int) -> tuple[int, int, np.ndarray]:
    """A disc of ``radius`` centred on pixel (y, x) of a ``size`` x ``size`` image.

    Returns (top, left, patch) with the patch in [0, 1]. The window keeps 4 pixels of
    zeros around the disc, beyond the Lanczos kernel's reach, so it equals the same
    region of a whole-image rendering (image borders included).
    """
    half = math.ceil(radius) + 4
    y0, y1 = max(y - half, 0), min(y + half + 1, size)
    x0, x1 = max(x - half, 0), min(x + half + 1, size)
    fy = np.arange(aa * y0, aa * y1)[:, None] - y * aa
    fx = np.arange(aa * x0, aa * x1)[None, :] - x * aa
    fine = np.where(fy**2 + fx**2 <= (radius * aa) ** 2, 255, 0).astype(np.uint8)
    return y0, x0, _shrink(fine, (x1 - x0, y1 - y0)).astype(np.float64) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Stretch to 0..255 (minimum to 0, maximum to
    255) and round, as the original's image saving."""
    lo, hi = float(image.min()), float(image.max())
    scale = 255.0 / (hi - lo) if hi > lo else 255.0
    return (((image - lo) * scale).clip(0, 255) + 0.5).astype(np.uint8)
