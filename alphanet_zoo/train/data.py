"""Image-folder data for training, validation, BN calibration and search.

Training augmentation is a pure function of ``(seed, epoch, sample index)``: each sample draws
from its own ``random.Random``, so a resumed run sees exactly the images an uninterrupted one
would, whatever the number of loader workers. `ShardedSampler` splits one global permutation per
epoch over the processes and can start part-way through it (resume), also with another number
of processes.
"""
from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from ..images import IMAGE_EXTENSIONS, load_image
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, resize_to_resolution
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
        raise FileNotFoundError(f"image folder not found: {root}")
    try:
        dataset = DatasetFolder(str(root), loader=load_image, extensions=IMAGE_EXTENSIONS)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{root} is not an image folder (one sub-folder of images per class): {e}") from None
    if imagenet_labels:
        from ..imagenet import synset_to_index

        index = synset_to_index()
        unknown = [c for c in dataset.classes if c not in index]
        if unknown:
            raise ValueError(f"{root}: folder {unknown[0]} is not an ImageNet-1k synset (like n01440764)")
        dataset.class_to_idx = {c: index[c] for c in dataset.classes}
        dataset.samples = [(path, index[dataset.classes[t]]) for path, t in dataset.samples]
        dataset.targets = [t for _, t in dataset.samples]
    return dataset


def is_imagenet_folder(root: str | os.PathLike) -> bool:
    """True if every class folder of ``root`` is named by an ImageNet-1k synset."""
    from ..imagenet import synset_to_index

    if not Path(root).is_dir():
        return False
    index = synset_to_index()
    folders = [d.name for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith(".")]
    return bool(folders) and all(name in index for name in folders)


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale: Sequence[float] = (0.08, 1.0),
                            ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random crop, as ``torchvision.transforms.RandomResizedCrop``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    # fallback: the central crop with the aspect ratio clamped to the range
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TrainTransform:
    """Training augmentation: random resized crop, horizontal flip, AutoAugment, normalise.

    ``transform(image, rng)`` draws every random choice from ``rng``. Without AutoAugment it is the
    training-style crop that BN calibration uses. ``normalized=False`` returns the uint8 crop
    (compact, for caching; `normalize` it later). Picklable (loader workers).
    """

    def __init__(self, crop_size: int = 224, interpolation: str = "bicubic", auto_augment: str | None = "v0",
                 scale: Sequence[float] = (0.08, 1.0), mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, normalized: bool = True) -> None:
        from torchvision.transforms import InterpolationMode

        self.crop_size = int(crop_size)
        self.interpolation = InterpolationMode(interpolation)
        self.auto_augment = AutoAugment(auto_augment) if auto_augment else None
        self.scale = tuple(scale)
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalized = normalized

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        from torchvision.transforms import functional as F

        top, left, h, w = random_resized_crop_box(image.width, image.height, rng, self.scale)
        image = F.resized_crop(image, top, left, h, w, [self.crop_size, self.crop_size], self.interpolation)
        if rng.random() < 0.5:
            image = F.hflip(image)
        if self.auto_augment is not None:
            image = self.auto_augment(image, rng)
        x = F.pil_to_tensor(image)
        return normalize(x, self.mean, self.std) if self.normalized else x

    def __repr__(self) -> str:
        return (f"TrainTransform(crop_size={self.crop_size}, interpolation={self.interpolation.value}, "
                f"auto_augment={self.auto_augment}, scale={self.scale})")


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (…, 3, H, W) -> float32 normalised, exactly as ``ToTensor`` then ``Normalize`` compute it."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return images.to(torch.float32).div(255).sub(mean_t).div(std_t)


class EvalCrop:
    """The evaluation transform up to the crop, as uint8: PIL image -> (3, crop, crop) uint8 tensor.

    `normalize` of its output equals `alphanet_zoo.transforms.EvalTransform` before the final resize.
    Compact enough to hold thousands of images in memory (search, BN calibration).
    """

    def __init__(self, preprocessing: Preprocessing) -> None:
        from torchvision import transforms as T

        p = preprocessing
        mode = T.InterpolationMode(p.interpolation)
        self.preprocessing = p
        self._pil = T.Compose([T.Resize(p.resize_size, interpolation=mode), T.CenterCrop(p.crop_size), T.PILToTensor()])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self._pil(image.convert("RGB") if image.mode != "RGB" else image)


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
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.num_samples, self.num_replicas, self.rank = num_samples, num_replicas, rank
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.global_batch = num_replicas * batch_size
        if num_samples < self.global_batch:
            raise ValueError(f"{num_samples} training images are fewer than one global batch "
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


class TensorBatches:
    """Cached uint8 images and labels, served as normalised float batches (resized if asked).

    Used for BN calibration and held-out accuracy, where the same images are read many times.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError("images and labels differ in length")
        self.images, self.labels, self.batch_size = images, labels, int(batch_size)
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return math.ceil(self.images.shape[0] / self.batch_size)

    def batches(self, resolution: int | None = None, device: torch.device | str = "cpu"
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, self.images.shape[0], self.batch_size):
            x = normalize(self.images[start:start + self.batch_size].to(device), self.mean, self.std)
            if resolution is not None:
                x = resize_to_resolution(x, resolution)
            yield x, self.labels[start:start + self.batch_size].to(device)


def load_tensor_batches(dataset: Dataset, indices: Sequence[int], batch_size: int, workers: int = 0,
                        progress=None) -> TensorBatches:
    """Read ``dataset[indices]`` (uint8 image tensors and labels) once into a `TensorBatches`."""
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, list(indices)), batch_size=max(1, batch_size), num_workers=workers)
    images, labels = [], []
    for x, y in (progress(loader) if progress else loader):
        images.append(x)
        labels.append(torch.as_tensor(y))
    if not images:
        raise ValueError("no images to load")
    return TensorBatches(torch.cat(images), torch.cat(labels), batch_size)


class LabelledImages(Dataset):
    """``(path, label)`` pairs as a dataset of ``(RGB PIL image, label)``."""

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]]) -> None:
        self.samples = [(str(p), int(t)) for p, t in samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        path, label = self.samples[index]
        return load_image(path), label


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
