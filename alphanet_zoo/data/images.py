"""Image files: which names count as images, and decoding one as RGB within bounded memory.

`load_image` refuses any image of more than `MAX_IMAGE_PIXELS` pixels before decoding it (from the
size in its header), so no file can make the package decode more than about 150 MB of pixels;
the resizes that follow are bounded too (`alphanet_zoo.preprocessing`). Any file that cannot be
decoded is one `BadImageError` naming it.
"""
from __future__ import annotations

import os
import warnings

from PIL import Image

from ..errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp")
#: Images with more pixels are refused before decoding: 50 megapixels (a large camera's photo) decode
#: to 150 MB as RGB. Pillow's own bomb check allows 179 megapixels (537 MB) before it refuses.
MAX_IMAGE_PIXELS = 50_000_000


class DatasetError(InputError):
    """An image folder or dataset that cannot be used: empty, wrong layout, unknown class folders."""


class BadImageError(DatasetError):
    """An image file that cannot be read or decoded, or that is too large."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = str(path), reason


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a file name has an image extension (any case)."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode an image as RGB (any mode converts: L, RGBA, P, CMYK, I;16, 1...).

    The first frame of an animated file is used. `BadImageError` for a missing, undecodable,
    truncated or oversized file.
    """
    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about EXIF and palette quirks; the checks below decide
            image = Image.open(f)
            width, height = image.size
            if width < 1 or height < 1:
                raise BadImageError(path, f"it has no pixels ({width}x{height})")
            if width * height > max_pixels:
                raise BadImageError(path, f"{width}x{height} is {width * height:,} pixels, over the limit of "
                                          f"{max_pixels:,}")
            return image.convert("RGB")
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except Exception as e:  # Pillow raises many kinds for hostile data: OSError, SyntaxError, ValueError, ...
        text = str(e).splitlines()[0] if str(e) else ""
        raise BadImageError(path, f"{type(e).__name__}: {text}"[:300]) from None
