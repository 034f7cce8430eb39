"""Image files: which names count as images, and opening one as RGB (for every data pipeline)."""
from __future__ import annotations

import os

from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a file name has an image extension (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as RGB (any mode converts: L, RGBA, P, CMYK, I;16...)."""
    with open(path, "rb") as f:
        image = Image.open(f)
        return image.convert("RGB")
