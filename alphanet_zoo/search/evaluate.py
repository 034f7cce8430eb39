"""Accuracy of a subnet for search: extract it, re-calibrate its BatchNorm, count top-1 on held-out images.

Images are decoded once into memory as uint8 crops (`alphanet_zoo.data.TensorBatches`); each
candidate then costs only its forward passes. Where the time of those goes on a CPU (measured with
``benchmarks/bench_search.py --profile``): with glibc's default allocator, every activation above
its mmap threshold is mapped and unmapped per layer and its pages zeroed by the kernel, so more
than half of a candidate's time was system time; `alphanet_zoo.allocator.keep_freed_memory` (also
importable from here, its old place) makes freed blocks reused
instead (a candidate 2-3x faster). Channels-last (``SubnetEvaluator(channels_last=True)``) speeds
the convolutions further; `same_predictions` checks it leaves every held-out prediction as it is.

Calibration and counting go through the very functions ``alphanet-extract`` and ``alphanet-eval``
use (`alphanet_zoo.calibration.calibrate`, `alphanet_zoo.data.evaluate`), so the top-1 recorded for
a candidate is what extracting it and evaluating it with the same flags gives.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from ..allocator import keep_freed_memory  # noqa: F401 (its old import path)
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
    are (for supernets trained on small images without per-subnet resizing). ``channels_last``:
    run the subnet and its inputs in channels-last memory format (faster convolutions on CPUs;
    check with `same_predictions` that it predicts what the default format does)."""

    def __init__(self, supernet: Supernet, calibration: TensorBatches, heldout: TensorBatches,
                 device: str | torch.device = "cpu", resize: bool = True, channels_last: bool = False) -> None:
        self.supernet, self.calibration, self.heldout = supernet, calibration, heldout
        self.device, self.resize, self.channels_last = torch.device(device), resize, channels_last

    def run(self, arch: ArchConfig, channels_last: bool | None = None, keep_predictions: bool = False):
        """The `alphanet_zoo.data.EvalResult` of ``arch`` (``channels_last``: None, as configured)."""
        last = self.channels_last if channels_last is None else channels_last
        resolution = arch.resolution if self.resize else None
        model = self.supernet.extract(arch).to(self.device)
        crops = self.calibration.calibration()
        if last:
            model = model.to(memory_format=torch.channels_last)
            crops = (x.contiguous(memory_format=torch.channels_last) for x in crops)
        calibrate(model, crops, resolution)
        heldout = self.heldout
        if last:
            heldout = ((x.contiguous(memory_format=torch.channels_last), *rest) for x, *rest in self.heldout)
        return evaluate(TorchClassifier(model, self.device), heldout, resolution=resolution, device=self.device,
                        keep_predictions=keep_predictions)

    def __call__(self, arch: ArchConfig) -> float:
        result = self.run(arch)
        return result.top1 if result.top1 is not None else 0.0

    def same_predictions(self, arch: ArchConfig) -> bool:
        """Whether channels-last gives ``arch`` the same top-5 on every held-out image as the default format."""
        def predictions(last: bool) -> list:
            return [(p.index, p.top5) for p in self.run(arch, last, keep_predictions=True).predictions]

        return predictions(False) == predictions(True)
