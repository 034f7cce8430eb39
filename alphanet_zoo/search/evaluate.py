"""Accuracy of a subnet for search: extract it, re-calibrate its BatchNorm, count top-1 on held-out images.

Images are decoded once into memory as uint8 crops (`alphanet_zoo.data.TensorBatches`); each
candidate then costs only its forward passes. Calibration and counting go through the very
functions ``alphanet-extract`` and ``alphanet-eval`` use (`alphanet_zoo.calibration.calibrate`,
`alphanet_zoo.data.evaluate`), so the top-1 recorded for a candidate is what extracting it and
evaluating it with the same flags gives.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from ..calibration import calibrate
from ..config import ArchConfig
from ..data import CalibrationBatches, Sample, TensorBatches, TorchClassifier, evaluate, labelled_batches
from ..preprocessing import EvalCrop, Preprocessing
from ..supernet import Supernet


def heldout_preprocessing(crop_size: int = 224) -> Preprocessing:
    """The evaluation crop at ``crop_size`` (short side resized to ``crop / 0.875``, centre crop):
    the published models' preprocessing at 224."""
    return Preprocessing(resolution=crop_size, resize_size=int(round(crop_size / 0.875)), crop_size=crop_size)


def heldout_subset(samples: Sequence[Sample], count: int | None, seed: int) -> list[Sample]:
    """A seeded subset of ``count`` samples (None or 0: all), kept in the dataset's order."""
    if not count or count >= len(samples):
        return list(samples)
    order = list(range(len(samples)))
    random.Random(seed).shuffle(order)
    return [samples[i] for i in sorted(order[:count])]


def load_calibration_images(calibration: CalibrationBatches, progress: Callable | None = None) -> TensorBatches:
    """The calibration batches, decoded once and held in memory (batch for batch the same tensors)."""
    return TensorBatches.from_batches(calibration, calibration.batch_size, progress)


def load_heldout_images(samples: Sequence[Sample], batch_size: int, crop_size: int = 224, workers: int = 0,
                        progress: Callable | None = None) -> TensorBatches:
    """Held-out images with the evaluation crop, decoded once (an unreadable image is an error naming it)."""
    pre = heldout_preprocessing(crop_size)
    return TensorBatches.from_batches(labelled_batches(samples, EvalCrop(pre), pre.crop_size, batch_size=batch_size,
                                                       workers=workers), batch_size, progress)


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
        calibrate(model, self.calibration.calibration(), resolution)
        result = evaluate(TorchClassifier(model, self.device), self.heldout, resolution=resolution,
                          device=self.device)
        return result.top1 if result.top1 is not None else 0.0
