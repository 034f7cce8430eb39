"""Training data: labelled samples as every command labels them, seeded augmentation, the resumable sampler.

Labels come from `alphanet_zoo.data.labelled_samples`, so training, evaluation and search number
classes the same way: a 1000-class supernet on ImageNet synset folders gets the canonical ImageNet
indices (also for a subset of the classes); any other gets its class folders in sorted order.

Training augmentation is a pure function of ``(seed, epoch, sample index)``: each sample draws
from its own ``random.Random``, so a resumed run sees exactly the images an uninterrupted one
would, whatever the number of loader workers. `ShardedSampler` splits one global permutation per
epoch over the processes and can start part-way through it (resume), also with another number
of processes.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..data import CLASS_FOLDERS, BadImageError, DatasetError, Sample, is_imagenet_folder, labelled_samples, load_image
from ..errors import InputError
from ..imagenet import NUM_CLASSES, synset_to_index
from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, RandomCrop, normalize
from .autoaugment import AutoAugment


IMAGENET_LABELS = "imagenet"


@dataclass(frozen=True)
class TrainingData:
    """The labelled training (and validation) samples and how they are labelled."""

    samples: list[Sample]
    classes: list[str]  # class folder names, in label order (ImageNet: the synsets present, by index)
    num_classes: int  # outputs of the classifier
    labels: str  # IMAGENET_LABELS (canonical indices) or CLASS_FOLDERS (sorted folder order)
    val_samples: list[Sample] | None = None


def training_data(train: str | os.PathLike, val: str | os.PathLike | None = None,
                  num_classes: int | None = None) -> TrainingData:
    """Read ``train`` (and ``val``) with `labelled_samples`; ``num_classes`` None means one output per
    class folder. A clear `DatasetError` for a missing or empty folder or a label that does not fit."""
    root = Path(train)
    if not root.is_dir():
        raise DatasetError(f"training image folder not found: {root}" if not root.exists()
                           else f"{root} is a file, not a folder of class folders")
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DatasetError(f"{root} has no class folders (one sub-folder of images per class)")
    num_classes = len(names) if num_classes is None else num_classes
    if num_classes == NUM_CLASSES and is_imagenet_folder(root):
        samples, _ = labelled_samples(root, NUM_CLASSES)
        index = synset_to_index()
        classes, labels = sorted(names, key=index.__getitem__), IMAGENET_LABELS
    else:
        samples, _ = labelled_samples(root, num_classes, classes=names)
        classes, labels = names, CLASS_FOLDERS
    val_samples = None
    if val:
        val_samples, _ = (labelled_samples(val, NUM_CLASSES) if labels == IMAGENET_LABELS
                          else labelled_samples(val, num_classes, classes=classes))
    return TrainingData(samples, classes, num_classes, labels, val_samples)


class TrainTransform:
    """Training augmentation: random resized crop, horizontal flip, AutoAugment; a uint8 tensor.

    ``transform(image, rng)`` draws every random choice from ``rng``. Without AutoAugment it is the
    training-style crop that BN calibration uses (`alphanet_zoo.preprocessing.RandomCrop`). The
    trainer makes the float input from a whole batch with `alphanet_zoo.preprocessing.model_input`;
    ``normalized=True`` returns the normalised float tensor instead. Picklable (loader workers).
    """

    def __init__(self, crop_size: int = 224, interpolation: str = "bicubic", auto_augment: str | None = "v0",
                 scale: Sequence[float] = (0.08, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, normalized: bool = False) -> None:
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
    """Labelled samples through a transform drawing from a per-sample seeded RNG.

    Item ``i`` of epoch ``e`` is ``(image, label, i, error)``, augmented with ``random.Random(f"{seed}:{e}:{i}")``;
    set the epoch with `set_epoch` before creating the loader's iterator (workers get a copy then).
    ``error`` is "" for a good image; for a file that cannot be decoded it is the reason (and the image
    zeros), so a loader worker never raises: the trainer stops with an error naming the file.
    """

    def __init__(self, samples: Sequence[Sample], transform: TrainTransform, seed: int = 0) -> None:
        self.samples, self.transform, self.seed = list(samples), transform, int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int, str]:
        sample = self.samples[index]
        try:
            image = load_image(sample.path)
        except BadImageError as e:
            size = self.transform.crop_size
            return torch.zeros(3, size, size, dtype=torch.uint8), sample.target, index, e.reason
        return self.transform(image, random.Random(f"{self.seed}:{self.epoch}:{index}")), sample.target, index, ""


def check_batch(samples: Sequence[Sample], indices: Sequence[int], errors: Sequence[str]) -> None:
    """Raise `BadImageError` naming the first file of a batch that could not be read."""
    for index, error in zip(indices, errors):
        if error:
            raise BadImageError(samples[index].path, error)


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


def eval_preprocessing(crop_size: int = 224) -> Preprocessing:
    """The evaluation preprocessing at ``crop_size`` (resize the short side to ``crop / 0.875``, centre crop)."""
    return Preprocessing(resolution=crop_size, resize_size=int(round(crop_size / 0.875)), crop_size=crop_size)
