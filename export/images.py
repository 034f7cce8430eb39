"""Real images for calibrating and verifying reduced-precision exports.

``--calib-data DIR`` (any folder of images: ImageNet's training or validation layout, class
folders, a flat folder; searched recursively) gives the images: a seeded draw of them, split in
two disjoint sets, one to calibrate int8 on and one to verify on. Without it, the package's
built-in test images (`builtin_image_paths`: sixteen synthetic images made by
``tools/make_test_images.py``) are used to verify; they are not photographs, so int8 calibrated on
them is a smoke test, and `alphanet-export` says so.

Every image goes through the model's own evaluation preprocessing
(`alphanet_zoo.preprocessing.EvalCrop` then `model_input`), so what is verified is what a user feeds.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import torch

from alphanet_zoo.data import is_image_file, load_image
from alphanet_zoo.errors import InputError
from alphanet_zoo.preprocessing import EvalCrop, Preprocessing, model_input

BUILTIN = "built-in test images"
DEFAULT_CALIB_IMAGES = 64
DEFAULT_VERIFY_IMAGES = 32


def builtin_image_paths() -> list[Path]:
    """The package's built-in test images (``alphanet_zoo/resources/images``), in a fixed order."""
    folder = resources.files("alphanet_zoo").joinpath("resources/images")
    paths = sorted(Path(str(p)) for p in folder.iterdir() if is_image_file(str(p)))
    if not paths:
        raise InputError("the package's built-in test images are missing (alphanet_zoo/resources/images)")
    return paths


def image_files(root: str | os.PathLike) -> list[str]:
    """Every image file under ``root`` (recursively, hidden entries skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--calib-data: {root} is not a folder")
    files = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(folder, n) for n in names if is_image_file(n) and not n.startswith("."))
    if not files:
        raise InputError(f"--calib-data: no images under {root}")
    return sorted(files)


def preprocess(paths: Sequence[str | os.PathLike], preprocessing: Preprocessing) -> torch.Tensor:
    """The model inputs (N, 3, R, R) of image files, through the evaluation preprocessing."""
    crop = EvalCrop(preprocessing)
    crops = torch.stack([crop(load_image(p)) for p in paths])
    return model_input(crops, preprocessing.resolution, preprocessing.mean, preprocessing.std)


@functools.lru_cache(maxsize=4)
def _builtin_images(preprocessing: Preprocessing) -> torch.Tensor:
    return preprocess(builtin_image_paths(), preprocessing)


def builtin_images(preprocessing: Preprocessing) -> torch.Tensor:
    """The built-in test images as model inputs (N, 3, R, R) (cached per preprocessing; a copy each call)."""
    return _builtin_images(preprocessing).clone()


@dataclass
class ImageSets:
    """Preprocessed images to calibrate on and to verify on, and what they are (for the metadata)."""

    calibration: torch.Tensor
    verification: torch.Tensor
    calibration_source: str
    verification_source: str
    real: bool  # from --calib-data (photographs, presumably), not the built-in synthetic set


def image_sets(preprocessing: Preprocessing, calib_data: str | os.PathLike | None = None, *,
               calib_images: int = DEFAULT_CALIB_IMAGES, verify_images: int = DEFAULT_VERIFY_IMAGES,
               seed: int = 0) -> ImageSets:
    """The images of an export: a seeded, disjoint draw from ``calib_data``, or the built-in set for both."""
    if calib_data is None:
        builtin = builtin_images(preprocessing)
        return ImageSets(builtin, builtin, BUILTIN, BUILTIN, real=False)
    files = image_files(calib_data)
    random.Random(seed).shuffle(files)
    name = Path(calib_data).name or str(calib_data)
    if len(files) < 2:
        raise InputError(f"--calib-data: {calib_data} holds {len(files)} image; at least 2 are needed "
                         "(some to calibrate on, others to verify on)")
    n_verify = min(verify_images, len(files) // 2)
    n_calib = min(calib_images, len(files) - n_verify)
    verify_paths, calib_paths = files[:n_verify], files[n_verify:n_verify + n_calib]
    return ImageSets(preprocess(calib_paths, preprocessing), preprocess(verify_paths, preprocessing),
                     f"{name}: {n_calib} images drawn with seed {seed}",
                     f"{name}: {n_verify} other images drawn with seed {seed}", real=True)
