"""Write the package's built-in test images (``alphanet_zoo/resources/images/``): made here, by us.

    python tools/make_test_images.py            # rewrites the folder, same pixels every time
    python tools/make_test_images.py --check    # exit 1 if the stored images differ from what this script makes

Sixteen procedurally generated images (shapes, gradients, textures, a grey-scale one, odd sizes
and aspect ratios), about 300 kB in all. `alphanet-export` runs them through a model when it
verifies a reduced-precision export and no ``--calib-data`` is given: they exercise every
preprocessing step and give varied activations, but they are not photographs, so agreement
measured on them is a smoke test; real images (``--calib-data``) give the figures to trust.
Every image is a function of its seed (numpy ``RandomState``), so the set is reproducible.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from alphanet_zoo._io import atomic_path

FOLDER = Path(__file__).resolve().parents[1] / "alphanet_zoo" / "resources" / "images"
JPEG_QUALITY = 88


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return y / h, x / w


def _smooth_noise(rng: np.random.RandomState, h: int, w: int, cells: int, channels: int = 3) -> np.ndarray:
    """Value noise: a coarse random grid upsampled bicubically, in [0, 1]."""
    coarse = (rng.rand(cells, cells, channels) * 255).astype(np.uint8)
    image = Image.fromarray(coarse if channels == 3 else coarse[..., 0]).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255


def _to_image(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))


def gradient_circles(rng, h, w):
    y, x = _grid(h, w)
    image = _to_image(np.stack([x, y, 1 - x * y], -1))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        cx, cy, r = rng.randint(0, w), rng.randint(0, h), rng.randint(10, min(h, w) // 3)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
    return image


def radial(rng, h, w):
    y, x = _grid(h, w)
    d = np.hypot(x - 0.5, y - 0.5)
    return _to_image(np.stack([1 - d, 0.5 + 0.5 * np.cos(12 * d), d], -1))


def checkerboard(rng, h, w):
    y, x = _grid(h, w)
    scale = 4 + 10 * y  # squares shrink towards the bottom, like a floor in perspective
    board = ((np.floor(x * scale) + np.floor(y * scale * 1.5)) % 2).astype(np.float32)
    return _to_image(np.stack([board * 0.9 + 0.05, board * 0.6 + 0.2, 1 - board * 0.8], -1))


def stripes(rng, h, w):
    y, x = _grid(h, w)
    angle = rng.uniform(0, np.pi)
    wave = 0.5 + 0.5 * np.sin(40 * (x * np.cos(angle) + y * np.sin(angle)))
    return _to_image(np.stack([wave, 0.3 + 0.4 * wave, 0.8 - 0.5 * wave], -1))


def clouds(rng, h, w):
    noise = 0.6 * _smooth_noise(rng, h, w, 5) + 0.4 * _smooth_noise(rng, h, w, 17)
    return _to_image(noise)


def rectangles(rng, h, w):
    image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.randint(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(14):
        x0, y0 = rng.randint(0, w), rng.randint(0, h)
        x1, y1 = x0 + rng.randint(8, w // 2), y0 + rng.randint(8, h // 2)
        draw.rectangle((x0, y0, x1, y1), fill=tuple(int(v) for v in rng.randint(0, 256, 3)),
                       outline=(0, 0, 0), width=2)
    return image


def rings(rng, h, w):
    y, x = _grid(h, w)
    d = np.hypot((x - 0.3) * w / h, y - 0.6)
    ring = (np.sin(60 * d) > 0).astype(np.float32)
    return _to_image(np.stack([ring, ring * 0.5 + 0.25, 1 - ring], -1))


def landscape(rng, h, w):
    y, x = _grid(h, w)
    horizon = 0.55 + 0.05 * np.sin(6 * x + rng.uniform(0, 6))
    sky = np.stack([0.4 + 0.3 * y, 0.6 + 0.3 * y, np.ones_like(y)], -1)
    ground = np.stack([0.2 + 0.2 * y, 0.5 - 0.2 * y, 0.1 + 0 * y], -1) * (0.8 + 0.2 * _smooth_noise(rng, h, w, 30))
    rgb = np.where((y > horizon)[..., None], ground, sky)
    sun = np.hypot((x - 0.75) * w / h, y - 0.2) < 0.08
    rgb[sun] = (1.0, 0.9, 0.3)
    return _to_image(rgb)


def dots(rng, h, w):
    image = Image.new("RGB", (w, h), (245, 240, 230))
    draw = ImageDraw.Draw(image)
    for cy in range(10, h, 22):
        for cx in range(10 + (cy // 22 % 2) * 11, w, 22):
            r = rng.randint(3, 9)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=tuple(int(v) for v in rng.randint(0, 200, 3)))
    return image


def polygons(rng, h, w):
    image = _to_image(0.3 + 0.4 * _smooth_noise(rng, h, w, 9))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        cx, cy, r = rng.randint(0, w), rng.randint(0, h), rng.randint(20, min(h, w) // 2)
        sides = rng.randint(3, 8)
        angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
        points = [(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in angles]
        draw.polygon(points, fill=tuple(int(v) for v in rng.randint(0, 256, 3)))
    return image


def plaid(rng, h, w):
    y, x = _grid(h, w)
    a = 0.5 + 0.5 * np.sin(25 * x) * np.sin(3 * x)
    b = 0.5 + 0.5 * np.sin(25 * y) * np.sin(2 * y)
    return _to_image(np.stack([a * 0.8, (a + b) / 2, b * 0.9], -1))


def wood(rng, h, w):
    y, x = _grid(h, w)
    turbulence = _smooth_noise(rng, h, w, 7, 1)
    grain = 0.5 + 0.5 * np.sin(50 * np.hypot(x - 0.5, (y - 1.5) * 0.3) + 8 * turbulence)
    return _to_image(np.stack([0.45 + 0.35 * grain, 0.25 + 0.25 * grain, 0.1 + 0.1 * grain], -1))


def marble(rng, h, w):
    y, x = _grid(h, w)
    turbulence = _smooth_noise(rng, h, w, 6, 1) + 0.5 * _smooth_noise(rng, h, w, 23, 1)
    vein = np.abs(np.sin(8 * x + 6 * y + 6 * turbulence)) ** 0.3
    return _to_image(np.stack([vein * 0.95, vein * 0.93, vein * 0.9], -1))


def cells(rng, h, w):
    y, x = _grid(h, w)
    seeds = rng.rand(24, 2)
    colours = rng.rand(24, 3)
    d = (y[..., None] - seeds[:, 0]) ** 2 + ((x[..., None] - seeds[:, 1]) * w / h) ** 2
    nearest = d.argmin(-1)
    edge = np.sort(d, -1)
    border = (np.sqrt(edge[..., 1]) - np.sqrt(edge[..., 0])) < 0.01
    rgb = colours[nearest]
    rgb[border] = 0
    return _to_image(rgb)


def glyphs(rng, h, w):
    image = Image.new("RGB", (w, h), (250, 250, 245))
    draw = ImageDraw.Draw(image)
    for top in range(12, h - 12, 18):
        left = 12
        while left < w - 20:
            width = rng.randint(4, 12)
            draw.rectangle((left, top, left + width, top + 10), fill=(20, 20, 40))
            left += width + rng.randint(2, 10)
    return image


def grey_texture(rng, h, w):
    noise = _smooth_noise(rng, h, w, 40, 1)
    return Image.fromarray((noise * 255).astype(np.uint8), mode="L")  # a grey-scale file: converted to RGB on load


# (name, generator, height, width, format): sizes vary in aspect, orientation and parity
IMAGES: list[tuple[str, Callable, int, int, str]] = [
    ("gradient_circles", gradient_circles, 240, 320, "JPEG"),
    ("radial", radial, 256, 256, "JPEG"),
    ("checkerboard", checkerboard, 300, 225, "JPEG"),
    ("stripes", stripes, 227, 301, "JPEG"),
    ("clouds", clouds, 240, 360, "JPEG"),
    ("rectangles", rectangles, 256, 320, "PNG"),
    ("rings", rings, 288, 288, "JPEG"),
    ("landscape", landscape, 240, 400, "JPEG"),
    ("dots", dots, 300, 240, "JPEG"),
    ("polygons", polygons, 256, 341, "JPEG"),
    ("plaid", plaid, 261, 261, "JPEG"),
    ("wood", wood, 320, 240, "JPEG"),
    ("marble", marble, 240, 300, "JPEG"),
    ("cells", cells, 250, 250, "PNG"),
    ("glyphs", glyphs, 232, 320, "PNG"),
    ("grey_texture", grey_texture, 256, 256, "JPEG"),
]


def encoded(index: int) -> tuple[str, bytes]:
    """The file name and bytes of image ``index`` of `IMAGES`."""
    name, make, h, w, fmt = IMAGES[index]
    image = make(np.random.RandomState(1000 + index), h, w)
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        image.save(buffer, "PNG", optimize=True)
    return f"{index:02d}_{name}.{'jpg' if fmt == 'JPEG' else 'png'}", buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored images instead of writing")
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder to write (default: the package's)")
    args = parser.parse_args()
    files = dict(encoded(i) for i in range(len(IMAGES)))
    if args.check:
        stored = {p.name: p.read_bytes() for p in args.out.iterdir() if p.is_file()} if args.out.is_dir() else {}
        differ = sorted(set(files) ^ set(stored) | {n for n in files if stored.get(n) != files[n]})
        print("the stored images match" if not differ else f"differ: {', '.join(differ)}")
        return 1 if differ else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.iterdir():
        if old.is_file() and old.name not in files:
            old.unlink()
    for name, data in files.items():
        with atomic_path(args.out / name) as tmp:
            tmp.write_bytes(data)
    print(f"wrote {len(files)} images, {sum(map(len, files.values())) / 1e3:.0f} kB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
