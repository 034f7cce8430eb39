"""ImageNet evaluation data: the two folder layouts, loaders, and BN-calibration batches.

Layouts (`open_dataset` tells them apart):

- synset folders, ``DIR/n01440764/*.JPEG``: the class index is always the canonical one
  (`alphanet_zoo.imagenet.synset_to_index`), whichever of the 1000 folders are present, missing or
  empty, so a subset of ImageNet evaluates correctly. A folder that is not an ImageNet synset is an
  error. Images are found recursively inside a synset folder.
- a flat folder of validation images plus a ground-truth file (see `ground_truth`).

The order is fixed (class index, then path; or file name for the flat layout), images are
opened with PIL and converted to RGB as torchvision's loader does, and decoding and resizing run in
DataLoader workers. A sample whose file cannot be decoded is not raised in the worker: it comes back
marked with the reason, so the evaluation loop can stop naming the file or skip and count it.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alphanet_zoo.images import IMAGE_EXTENSIONS, is_image_file, load_image
from alphanet_zoo.imagenet import synset_to_index
from alphanet_zoo.transforms import resize_to_resolution

from .ground_truth import GROUND_TRUTH_FILES, read_ground_truth

SYNSET_FOLDERS, GROUND_TRUTH_FILE = "synset_folders", "ground_truth_file"


class DatasetError(ValueError):
    """An image folder that cannot be evaluated: empty, wrong layout, unknown class folders."""


class BadImageError(DatasetError):
    """An image file that cannot be read or decoded."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = str(path), reason


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image: its file and canonical class index (compact: a training folder has 1.28M)."""

    path: str
    target: int


def _image_files(folder: Path) -> list[str]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(root, n) for n in names if is_image_file(n) and not n.startswith("."))
    return sorted(files)


def synset_folder_samples(root: str | os.PathLike) -> list[Sample]:
    """Samples of a ``root/<synset>/...`` tree, in canonical class order, then by path."""
    root = Path(root)
    index = synset_to_index()
    folders = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                     key=lambda d: d.name)
    unknown = [d.name for d in folders if d.name not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DatasetError(f"{root}: folder name{'s' if len(unknown) > 1 else ''} {shown} "
                           f"{'are' if len(unknown) > 1 else 'is'} not an ImageNet-1k synset id (like n01440764); "
                           "an ImageNet folder holds one folder per class named by its synset")
    samples = []
    for folder in sorted(folders, key=lambda d: index[d.name]):
        samples.extend(Sample(p, index[folder.name]) for p in _image_files(folder))
    return samples


def ground_truth_samples(root: str | os.PathLike, ground_truth: str | os.PathLike,
                         label_map: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of a flat folder of validation images labelled by a ground-truth file, by file name.

    Every image in the folder must be in the ground truth; images the ground truth lists but the
    folder lacks are simply not evaluated (a subset is fine).
    """
    root = Path(root)
    labels = read_ground_truth(ground_truth, label_map)
    samples = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")):
        if path.stem not in labels:
            raise DatasetError(f"image {path} is not listed in {ground_truth}; "
                               "the folder must hold only the validation images it labels")
        samples.append(Sample(str(path), labels[path.stem]))
    return samples


def find_ground_truth(root: str | os.PathLike) -> Path | None:
    """The ground-truth file inside ``root``, if any (``LOC_val_solution.csv`` first)."""
    for name in GROUND_TRUTH_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def open_dataset(root: str | os.PathLike, ground_truth: str | os.PathLike | None = None,
                 label_map: str | os.PathLike | None = None) -> tuple[list[Sample], str]:
    """The samples of an evaluation folder and its layout (``synset_folders`` or ``ground_truth_file``).

    A folder with images at its top is the flat layout (its ground-truth file given, or found in
    it); otherwise its sub-folders are synset folders. An empty dataset is an error.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"data folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"--data must be a folder, got the file {root}")
    flat_images = any(p.is_file() and is_image_file(p) and not p.name.startswith(".") for p in root.iterdir())
    if ground_truth is None and flat_images:
        ground_truth = find_ground_truth(root)
        if ground_truth is None:
            raise DatasetError(f"{root} holds images but no ground-truth file ({' or '.join(GROUND_TRUTH_FILES)}); "
                               "give one with --ground-truth, or lay the images out in synset folders")
    if ground_truth is not None:
        samples, layout = ground_truth_samples(root, ground_truth, label_map), GROUND_TRUTH_FILE
    else:
        samples, layout = synset_folder_samples(root), SYNSET_FOLDERS
    if not samples:
        raise DatasetError(f"no images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files "
                           "in synset folders like n01440764/, or beside a ground-truth file)")
    return samples, layout


class ImageDataset(Dataset):
    """Labelled images through a transform: item ``i`` is ``(image, target, i, error)``.

    ``error`` is "" for a good image; for a file that cannot be decoded it is the reason, and
    ``image`` is a zero tensor of ``blank_shape`` so the batch still collates.
    """

    def __init__(self, samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor],
                 blank_shape: Sequence[int]) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.blank_shape = tuple(blank_shape)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str]:
        sample = self.samples[i]
        try:
            image = self.transform(load_image(sample.path))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            # PIL raises OSError for truncated/undecodable data, UnidentifiedImageError (an OSError)
            # for unknown formats and SyntaxError or ValueError from some broken headers
            return torch.zeros(self.blank_shape), sample.target, i, f"{type(e).__name__}: {e}"
        return image, sample.target, i, ""


def eval_loader(samples: Sequence[Sample], transform: Callable[[Image.Image], torch.Tensor], resolution: int, *,
                batch_size: int = 256, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A fixed-order loader of ``(images, targets, indices, errors)`` batches; decoding runs in ``workers``."""
    dataset = ImageDataset(samples, transform, (3, resolution, resolution))
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers > 0 else None, persistent_workers=False,
                      generator=torch.Generator().manual_seed(0))


# -- BN calibration ---------------------------------------------------------------------------

class CalibrationTransform:
    """The training-style transform the official test script calibrates BN with.

    Random resized crop (224, bicubic), random horizontal flip, to tensor, normalise (the training
    crop without AutoAugment, `alphanet_zoo.train.data.TrainTransform`), then the bicubic resize to
    the model's resolution (what the official forward does to its input). ``transform(image, rng)``
    draws every random choice from ``rng``.
    """

    def __init__(self, resolution: int, crop_size: int = 224) -> None:
        from alphanet_zoo.train.data import TrainTransform

        self.resolution = resolution
        self._crop = TrainTransform(crop_size, "bicubic", auto_augment=None)

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        return resize_to_resolution(self._crop(image, rng), self.resolution)


class _SeededImages(Dataset):
    """Item ``k`` is draw ``k``: (image index, seed); its random crop and flip come from that seed
    alone, so a draw gives the same tensor in any worker and with any number of workers."""

    def __init__(self, samples: Sequence[Sample], draws: torch.Tensor, transform: CalibrationTransform) -> None:
        self.samples, self.draws, self.transform = list(samples), draws, transform

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, str]:
        index, seed = (int(v) for v in self.draws[k])
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            return torch.zeros(3, self.transform.resolution, self.transform.resolution), \
                f"{sample.path}\0{type(e).__name__}: {e}"
        return self.transform(image, random.Random(seed)), ""


class CalibrationBatches:
    """Iterable of ``num_batches`` image tensors (batch_size, 3, R, R) for `alphanet_zoo.calibrate_bn`.

    Images are drawn without replacement in a seeded random order (a new permutation each time the
    folder runs out); each image's crop and flip are seeded per draw. The same arguments give the
    same tensors every time they are iterated, whatever ``workers`` is.
    """

    def __init__(self, samples: Sequence[Sample], resolution: int, num_batches: int, batch_size: int,
                 seed: int = 0, workers: int = 0) -> None:
        if num_batches < 1 or batch_size < 1:
            raise ValueError(f"calibration needs positive batch counts, got {num_batches} batches of {batch_size}")
        if not samples:
            raise DatasetError("no calibration images")
        self.samples, self.resolution = list(samples), resolution
        self.num_batches, self.batch_size, self.seed, self.workers = num_batches, batch_size, seed, workers

    def __len__(self) -> int:
        return self.num_batches

    def draws(self) -> torch.Tensor:
        """(num_batches * batch_size, 2) int64: image index and per-draw seed, in order."""
        total = self.num_batches * self.batch_size
        g = torch.Generator().manual_seed(self.seed)
        epochs = -(-total // len(self.samples))
        order = torch.cat([torch.randperm(len(self.samples), generator=g) for _ in range(epochs)])[:total]
        seeds = torch.randint(0, 2 ** 62, (total,), generator=g)
        return torch.stack([order, seeds], dim=1)

    def __iter__(self) -> Iterator[torch.Tensor]:
        dataset = _SeededImages(self.samples, self.draws(), CalibrationTransform(self.resolution))
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                            prefetch_factor=4 if self.workers > 0 else None,
                            generator=torch.Generator().manual_seed(self.seed))
        for images, errors in loader:
            for error in errors:
                if error:
                    path, reason = error.split("\0", 1)
                    raise BadImageError(path, reason)
            yield images


def calibration_batches(train_dir: str | os.PathLike, resolution: int, num_batches: int = 64,
                        batch_size: int = 256, seed: int = 0, workers: int = 0) -> CalibrationBatches:
    """Seeded BN-calibration batches from a training folder in the synset layout (``train/n01440764/*.JPEG``).

    ``calibrate_bn(model, calibration_batches(train_dir, model.arch.resolution), 64)`` re-calibrates
    a subnet the way the official test script does (64 batches of 256 training images).
    """
    root = Path(train_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"calibration data folder not found: {root}")
    samples = synset_folder_samples(root)
    if not samples:
        raise DatasetError(f"no images found in the synset folders of {root}")
    return CalibrationBatches(samples, resolution, num_batches, batch_size, seed, workers)
