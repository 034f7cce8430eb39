"""Batches of uint8 crops: labelled images for accuracy, seeded training-style crops for BN calibration.

Decoding and cropping run in DataLoader workers and return uint8 tensors; the model's float input
is made from a whole batch by `alphanet_zoo.preprocessing.model_input`. A batch is therefore the
same tensor in every command and with any number of workers, and a cached batch (`TensorBatches`)
is the very batch a streamed one would be. A labelled image that cannot be decoded is not raised
in the worker: it comes back marked with the reason, so the consumer can stop naming the file or
skip and count it.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from ..preprocessing import RandomCrop
from ..record import Calibration
from .folders import Sample, class_folder_samples, is_imagenet_folder, synset_folder_samples
from .images import BadImageError, DatasetError, load_image


def batch_indices(count: int, batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``range(count)``: the fixed order every consumer batches a dataset in."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


class LabelledImages(Dataset):
    """Labelled images through a crop: item ``i`` is ``(uint8 crop, target, i, error)``.

    ``error`` is "" for a good image; for a file that cannot be decoded it is the reason, and the
    crop is zeros of ``blank_shape`` so the batch still collates.
    """

    def __init__(self, samples: Sequence[Sample], crop: Callable[[Image.Image], torch.Tensor],
                 blank_shape: Sequence[int]) -> None:
        self.samples, self.crop, self.blank_shape = list(samples), crop, tuple(blank_shape)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str]:
        sample = self.samples[i]
        try:
            image = self.crop(load_image(sample.path))
        except BadImageError as e:
            return torch.zeros(self.blank_shape, dtype=torch.uint8), sample.target, i, e.reason
        return image, sample.target, i, ""


def labelled_batches(samples: Sequence[Sample], crop: Callable[[Image.Image], torch.Tensor], crop_size: int, *,
                     batch_size: int, workers: int = 0, batches: Sequence[Sequence[int]] | None = None,
                     pin_memory: bool = False) -> DataLoader:
    """Batches ``(uint8 crops, targets, indices, errors)`` of ``samples`` in the fixed order of
    `batch_indices` (or the given ``batches`` of sample indices, e.g. one process's share)."""
    dataset = LabelledImages(samples, crop, (3, crop_size, crop_size))
    order = batch_indices(len(dataset), batch_size) if batches is None else [list(b) for b in batches]
    return DataLoader(dataset, batch_sampler=order, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers > 0 else None,
                      generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone


class CalibrationDraws(Dataset):
    """Item ``k`` is calibration draw ``k``: (image index, seed); its crop and flip come from that seed
    alone, so a draw gives the same tensor in any worker and with any number of workers."""

    def __init__(self, samples: Sequence[Sample], draws: torch.Tensor, crop: RandomCrop) -> None:
        self.samples, self.draws, self.crop = list(samples), draws, crop

    def __len__(self) -> int:
        return len(self.draws)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, str]:
        index, seed = (int(v) for v in self.draws[k])
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
        except BadImageError as e:
            return torch.zeros(3, self.crop.size, self.crop.size, dtype=torch.uint8), f"{sample.path}\0{e.reason}"
        return self.crop(image, random.Random(seed)), ""


class CalibrationBatches:
    """``num_batches`` uint8 batches (batch_size, 3, crop, crop) of seeded training-style crops.

    Images are drawn without replacement in a seeded random order (a new permutation each time the
    folder runs out); each draw's crop and flip are seeded per draw. The same arguments give the
    same batches every time they are iterated, whatever ``workers`` is, in every command:
    ``alphanet-extract``, ``alphanet-eval`` and ``alphanet-search`` calibrate on the same tensors.
    """

    def __init__(self, samples: Sequence[Sample], num_batches: int, batch_size: int, seed: int = 0,
                 workers: int = 0, crop_size: int = 224, data: str = "") -> None:
        if num_batches < 1 or batch_size < 1:
            raise InputError(f"calibration needs positive batch counts, got {num_batches} batches of {batch_size}")
        if not samples:
            raise DatasetError("no calibration images")
        self.samples, self.num_batches, self.batch_size = list(samples), num_batches, batch_size
        self.seed, self.workers, self.crop_size, self.data = seed, workers, crop_size, data

    def __len__(self) -> int:
        return self.num_batches

    def describe(self):
        """The `alphanet_zoo.record.Calibration` a model calibrated on these batches records."""
        return Calibration(data=self.data, num_batches=self.num_batches, batch_size=self.batch_size, seed=self.seed,
                           crop_size=self.crop_size)

    def dataset(self) -> "CalibrationDraws":
        """The draws as a dataset (item ``k``: draw ``k``'s uint8 crop and error), for a custom loader,
        e.g. one process's share of the batches."""
        return CalibrationDraws(self.samples, self.draws(), RandomCrop(self.crop_size))

    def draws(self) -> torch.Tensor:
        """(num_batches * batch_size, 2) int64: image index and per-draw seed, in order."""
        total = self.num_batches * self.batch_size
        g = torch.Generator().manual_seed(self.seed)
        passes = -(-total // len(self.samples))
        order = torch.cat([torch.randperm(len(self.samples), generator=g) for _ in range(passes)])[:total]
        seeds = torch.randint(0, 2 ** 62, (total,), generator=g)
        return torch.stack([order, seeds], dim=1)

    def __iter__(self) -> Iterator[torch.Tensor]:
        dataset = self.dataset()
        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.workers,
                            prefetch_factor=4 if self.workers > 0 else None,
                            generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
        for images, errors in loader:
            for error in errors:
                if error:
                    path, reason = error.split("\0", 1)
                    raise BadImageError(path, reason)
            yield images


def calibration_batches(train_dir: str | os.PathLike, num_batches: int = 64, batch_size: int = 256, seed: int = 0,
                        workers: int = 0, crop_size: int = 224) -> CalibrationBatches:
    """Seeded BN-calibration batches from a training folder (ImageNet synset folders, or class folders).

    ``calibrate(model, calibration_batches(train_dir), model.arch.resolution)`` re-calibrates a subnet
    the way the official test script does (64 batches of 256 training images).
    """
    root = Path(train_dir)
    if not root.is_dir():
        raise DatasetError(f"calibration data folder not found: {root}")
    samples = synset_folder_samples(root) if is_imagenet_folder(root) else class_folder_samples(root)[0]
    if not samples:
        raise DatasetError(f"no images found in {root}")
    return CalibrationBatches(samples, num_batches, batch_size, seed, workers, crop_size, data=root.name)


class TensorBatches:
    """Batches held in memory (uint8 crops, labels, indices), served as they were loaded.

    For search, where the same calibration and held-out images are read for every candidate.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 indices: torch.Tensor | None = None) -> None:
        if images.shape[0] != labels.shape[0]:
            raise InputError("images and labels differ in length")
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.indices = indices if indices is not None else torch.arange(images.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.images.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]]:
        for batch in batch_indices(self.images.shape[0], self.batch_size):
            s = slice(batch[0], batch[-1] + 1)
            yield self.images[s], self.labels[s], self.indices[s], [""] * len(batch)

    def calibration(self) -> Iterable[torch.Tensor]:
        """The images alone, batch by batch (for BN calibration)."""
        return (images for images, _, _, _ in self)

    @classmethod
    def from_batches(cls, batches: Iterable, batch_size: int, progress: Callable | None = None) -> "TensorBatches":
        """Read labelled ``(images, targets, indices, errors)`` batches (an unreadable image is an
        error naming it) or bare image batches (calibration) once into memory."""
        images, labels, indices = [], [], []
        dataset = getattr(batches, "dataset", None)
        for batch in (progress(batches) if progress else batches):
            if isinstance(batch, torch.Tensor):
                images.append(batch)
                continue
            x, y, idx, errors = batch
            for j, error in enumerate(errors):
                if error:
                    path = dataset.samples[int(idx[j])].path if dataset is not None else f"#{int(idx[j])}"
                    raise BadImageError(path, error)
            images.append(x)
            labels.append(torch.as_tensor(y))
            indices.append(torch.as_tensor(idx))
        if not images:
            raise DatasetError("no images to load")
        x = torch.cat(images)
        y = torch.cat(labels) if labels else torch.full((x.shape[0],), -1, dtype=torch.long)
        return cls(x, y, batch_size, torch.cat(indices) if indices else None)
