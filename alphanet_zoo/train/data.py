"""Image-folder data for training: seeded augmentation and the sharded, resumable sampler.

Training augmentation is a pure function of ``(seed, epoch, sample index)``: each sample draws
from its own ``random.Random``, so a resumed run sees exactly the images an uninterrupted one
would, whatever the number of loader workers. `ShardedSampler` splits one global permutation per
epoch over the processes and can start part-way through it (resume), also with another number
of processes.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..data.images import IMAGE_EXTENSIONS, load_image
from ..errors import InputError
from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, RandomCrop, normalize
from .autoaugment import AutoAugment


def image_folder(root: str | os.PathLike, imagenet_labels: bool = False):
    """An ImageFolder (``root/<class>/<image>``) of ``(RGB PIL image, class index)``; a clear error for a bad folder.

    Classes are numbered in sorted folder order, or, with ``imagenet_labels``, by their canonical
    ImageNet-1k index (folders named by synset, like ``n01440764``), so that a subset of ImageNet's
    classes still gets the labels of the 1000-class classifier.
    """
    from torchvision.datasets import DatasetFolder

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}")
    try:
        dataset = DatasetFolder(str(root), loader=load_image, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as e:
        raise InputError(f"{root} is not an image folder (one sub-folder of images per class): {e}") from None
    if imagenet_labels:
        from ..imagenet import synset_to_index

        index = synset_to_index()
        unknown = [c for c in dataset.classes if c not in index]
        if unknown:
            raise InputError(f"{root}: folder {unknown[0]} is not an ImageNet-1k synset (like n01440764)")
        dataset.class_to_idx = {c: index[c] for c in dataset.classes}
        dataset.samples = [(path, index[dataset.classes[t]]) for path, t in dataset.samples]
        dataset.targets = [t for _, t in dataset.samples]
    return dataset


class TrainTransform:
    """Training augmentation: random resized crop, horizontal flip, AutoAugment, normalise.

    ``transform(image, rng)`` draws every random choice from ``rng``. Without AutoAugment it is the
    training-style crop that BN calibration uses (`alphanet_zoo.preprocessing.RandomCrop`).
    ``normalized=False`` returns the uint8 crop. Picklable (loader workers).
    """

    def __init__(self, crop_size: int = 224, interpolation: str = "bicubic", auto_augment: str | None = "v0",
                 scale: Sequence[float] = (0.08, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, normalized: bool = True) -> None:
        self.crop = RandomCrop(crop_size, interpolation, scale)
        self.crop_size = int(crop_size)
        self.auto_augment = AutoAugment(auto_augment) if auto_augment else None
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalized = normalized

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        from torchvision.transforms.functional import pil_to_tensor

        image = self.crop.pil(image, rng)
        if self.auto_augment is not None:
            image = self.auto_augment(image, rng)
        x = pil_to_tensor(image)
        return normalize(x, self.mean, self.std) if self.normalized else x

    def __repr__(self) -> str:
        return f"TrainTransform({self.crop}, auto_augment={self.auto_augment})"


class SeededDataset(Dataset):
    """A dataset of ``(PIL image, label)`` with a transform drawing from a per-sample seeded RNG.

    Sample ``i`` of epoch ``e`` is augmented with ``random.Random(f"{seed}:{e}:{i}")``; set the
    epoch with `set_epoch` before creating the loader's iterator (workers get a copy then).
    """

    def __init__(self, dataset: Dataset, transform: TrainTransform, seed: int = 0) -> None:
        self.dataset, self.transform, self.seed = dataset, transform, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image, random.Random(f"{self.seed}:{self.epoch}:{index}")), label


class ShardedSampler(Sampler[int]):
    """This process's share of one shuffled pass over the data, in whole global batches.

    Each epoch uses the permutation ``torch.randperm(n)`` seeded with ``seed + epoch``, cut to a
    multiple of ``num_replicas * batch_size``; global batch ``k`` is its ``k``-th slice of that
    size and process ``r`` takes every ``num_replicas``-th sample of it, starting at ``r``.
    ``set_epoch(epoch, consumed)`` skips the first ``consumed`` samples of the permutation (those
    already trained on), so a run can resume mid-epoch, also with another number of processes.
    """

    def __init__(self, num_samples: int, num_replicas: int = 1, rank: int = 0, batch_size: int = 1,
                 seed: int = 0, shuffle: bool = True) -> None:
        if not 0 <= rank < num_replicas:
            raise InputError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_samples, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.global_batch = num_replicas * batch_size
        if num_samples < self.global_batch:
            raise InputError(f"{num_samples} training images are fewer than one global batch "
                             f"({num_replicas} processes x batch {batch_size})")
        self.epoch, self.consumed = 0, 0

    @property
    def samples_per_epoch(self) -> int:
        """Samples trained on per epoch, all processes together (whole global batches)."""
        return self.num_samples // self.global_batch * self.global_batch

    def set_epoch(self, epoch: int, consumed: int = 0) -> None:
        # (a resume with another number of processes can leave a partial global batch: redo it, so
        # every process gets the same number of whole batches)
        consumed = min(int(consumed) - int(consumed) % self.global_batch, self.samples_per_epoch)
        self.epoch, self.consumed = int(epoch), max(0, consumed)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.samples_per_epoch))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_samples, generator=g)[:self.samples_per_epoch].tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.consumed + self.rank::self.num_replicas])

    def __len__(self) -> int:
        return (self.samples_per_epoch - self.consumed) // self.num_replicas


class MappedDataset(Dataset):
    """``dataset`` with ``fn`` applied to each image (picklable, unlike a lambda)."""

    def __init__(self, dataset: Dataset, fn) -> None:
        self.dataset, self.fn = dataset, fn

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        image, label = self.dataset[index]
        return self.fn(image), label


def eval_preprocessing(crop_size: int = 224) -> Preprocessing:
    """The evaluation preprocessing at ``crop_size`` (resize the short side to ``crop / 0.875``, centre crop)."""
    return Preprocessing(resolution=crop_size, resize_size=int(round(crop_size / 0.875)), crop_size=crop_size)
