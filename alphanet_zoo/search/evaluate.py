"""Accuracy of a subnet for search: extract it, re-calibrate its BatchNorm, count top-1 on held-out images.

Images are decoded once and kept as uint8 crops (`TensorBatches`); each candidate then costs only
its forward passes. Calibration images get the training-style crop and flip the official test
script calibrates with (seeded per image); held-out images the evaluation crop (short side 256,
centre 224). Both are resized (bicubic) to each candidate's resolution, as the published
evaluation does.
"""
from __future__ import annotations

import os
import random
from typing import Sequence

import torch

from ..calibration import calibrate_bn
from ..config import ArchConfig
from ..supernet import Supernet
from ..train.data import (EvalCrop, LabelledImages, MappedDataset, SeededDataset, TensorBatches, TrainTransform,
                          eval_preprocessing, image_folder, load_tensor_batches)


def labelled_samples(root: str | os.PathLike, num_classes: int) -> list[tuple[str, int]]:
    """``(path, class index)`` of every image under ``root``.

    For a 1000-class supernet the folder is read as ImageNet (synset folders, or a flat folder with
    a ground-truth file; `alphanet_zoo.eval.data.open_dataset`), so labels are the canonical indices
    even for a subset of the classes; otherwise as an ImageFolder with sorted class folders (the
    labels ``alphanet-train`` gives).
    """
    if num_classes == 1000:
        from alphanet_zoo.eval.data import open_dataset

        samples, _layout = open_dataset(root)
        return [(str(s.path), int(s.target)) for s in samples]
    return [(str(p), int(t)) for p, t in image_folder(root).samples]


def _subset(samples: Sequence, count: int | None, seed: int) -> list:
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in sorted(order[:count] if count else order)]


def load_calibration_images(samples: Sequence[tuple[str, int]], num_images: int, batch_size: int, crop_size: int = 224,
                            seed: int = 0, workers: int = 0, progress=None) -> TensorBatches:
    """``num_images`` seeded training-style crops (random resized crop, flip; uint8), ``batch_size`` a batch."""
    chosen = _subset(samples, num_images, seed)
    dataset = SeededDataset(LabelledImages(chosen), TrainTransform(crop_size, auto_augment=None, normalized=False),
                            seed)
    return load_tensor_batches(dataset, range(len(chosen)), batch_size, workers, progress)


def load_heldout_images(samples: Sequence[tuple[str, int]], num_images: int | None, batch_size: int,
                        crop_size: int = 224, seed: int = 0, workers: int = 0, progress=None) -> TensorBatches:
    """A seeded subset of ``num_images`` (None: all) with the evaluation crop (uint8)."""
    chosen = _subset(samples, num_images, seed)
    dataset = MappedDataset(LabelledImages(chosen), EvalCrop(eval_preprocessing(crop_size)))
    return load_tensor_batches(dataset, range(len(chosen)), batch_size, workers, progress)


class SubnetEvaluator:
    """``evaluator(arch) -> top-1 %`` of subnet ``arch`` of ``supernet`` on the held-out images,
    after BatchNorm calibration on the calibration images. ``resize=False`` feeds the crops as they
    are (for supernets trained on small images without per-subnet resizing)."""

    def __init__(self, supernet: Supernet, calibration: TensorBatches, heldout: TensorBatches,
                 device: str | torch.device = "cpu", resize: bool = True) -> None:
        self.supernet, self.calibration, self.heldout = supernet, calibration, heldout
        self.device, self.resize = torch.device(device), resize

    def __call__(self, arch: ArchConfig) -> float:
        resolution = arch.resolution if self.resize else None
        model = self.supernet.extract(arch).to(self.device)
        calibrate_bn(model, self.calibration.batches(resolution, self.device))
        correct = total = 0
        with torch.no_grad():
            for x, labels in self.heldout.batches(resolution, self.device):
                correct += (model(x).argmax(1) == labels).sum().item()
                total += labels.numel()
        return 100.0 * correct / max(total, 1)

