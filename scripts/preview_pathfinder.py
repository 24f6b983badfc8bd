"""Draw a grid of generated Pathfinder samples, each captioned with its label, into one PNG.

python scripts/preview_pathfinder.py docs/pathfinder_preview.png --size 32 --n 16
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from PIL import Image, ImageDraw

from lra_bench.data.generators.pathfinder import DIFFICULTY_LENGTH, generate_sample, preset


def preview(n: int, size: int, difficulty: str, seed: int, scale: int) -> Image.Image:
    """A sheet of ``n`` samples, upscaled ``scale`` times (nearest), label under each."""
    params = preset(size, difficulty)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    cell, caption, gap = size * scale, 14, 4
    sheet = Image.new("L", (cols * (cell + gap) + gap, rows * (cell + caption + gap) + gap), 40)
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        sample = generate_sample(params, seed, i)
        tile = Image.fromarray(sample.image, mode="L").resize(
            (cell, cell), Image.Resampling.NEAREST
        )
        x = gap + (i % cols) * (cell + gap)
        y = gap + (i // cols) * (cell + caption + gap)
        sheet.paste(tile, (x, y))
        text = "1: connected" if sample.label else "0: separate"
        draw.text((x + 2, y + cell + 1), text, fill=230)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument(
        "--size", type=int, default=32, help="image side: 32, 64, 128 (Path-X) or 256"
    )
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--difficulty", default="hard", choices=sorted(DIFFICULTY_LENGTH))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale", type=int, default=None, help="upscaling factor (default: 128 px per sample)"
    )
    args = parser.parse_args()
    scale = args.scale or max(1, 128 // args.size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    preview(args.n, args.size, args.difficulty, args.seed, scale).save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
