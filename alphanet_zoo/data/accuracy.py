"""The one top-1/top-5 loop: a classifier over labelled uint8 batches, counted exactly.

The classifier is any callable from a float input batch to logits: a PyTorch model
(`TorchClassifier` runs it in eval mode without gradients on a device), an ONNX Runtime or
OpenVINO session. Top-k is ``logits.topk(k)``, as the official accuracy function computes it.
Results accumulate in an `EvalResult` the caller may pass in, so what was measured survives an
interruption (Ctrl-C) of the loop. ``alphanet-eval``, ``alphanet-search`` and training validation
all count with it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from ..preprocessing import IMAGENET_MEAN, IMAGENET_STD, model_input
from .images import BadImageError

Classifier = Callable[[torch.Tensor], torch.Tensor]


class TorchClassifier:
    """A PyTorch model as a classifier: eval mode, no gradients, inputs moved to its device."""

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.to(self.device, non_blocking=True)).float()


@dataclass
class Prediction:
    """One image's outcome: its dataset index, label and the five best classes (best first)."""

    index: int
    target: int
    top5: list[int]


@dataclass
class EvalResult:
    """Counts and timings of one evaluation; ``top1``/``top5`` are percentages."""

    images: int = 0
    correct1: int = 0
    correct5: int = 0
    seconds: float = 0.0
    bad_images: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    predictions: list[Prediction] = field(default_factory=list)
    interrupted: bool = False

    @property
    def top1(self) -> float | None:
        return 100.0 * self.correct1 / self.images if self.images else None

    @property
    def top5(self) -> float | None:
        return 100.0 * self.correct5 / self.images if self.images else None

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.seconds if self.images and self.seconds > 0 else None

    def update(self, logits: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor,
               keep_predictions: bool = False) -> None:
        """Add a batch of logits (N, C) for ``targets`` (N,)."""
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices.cpu()
        hits = top.eq(targets.cpu().view(-1, 1))
        self.correct1 += int(hits[:, 0].sum())
        self.correct5 += int(hits.any(dim=1).sum())
        self.images += len(targets)
        if keep_predictions:
            self.predictions.extend(Prediction(int(i), int(t), p.tolist())
                                    for i, t, p in zip(indices, targets, top))

    def merge(self, other: "EvalResult") -> "EvalResult":
        """Add another share's counts (distributed evaluation); predictions are kept in index order."""
        self.images += other.images
        self.correct1 += other.correct1
        self.correct5 += other.correct5
        self.seconds = max(self.seconds, other.seconds)
        self.bad_images += other.bad_images
        self.predictions = sorted(self.predictions + other.predictions, key=lambda p: p.index)
        self.interrupted = self.interrupted or other.interrupted
        return self


def evaluate(classifier: Classifier, batches: Iterable, *, resolution: int | None,
             mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
             device: str | torch.device = "cpu", result: EvalResult | None = None, skip_bad_images: bool = False,
             keep_predictions: bool = False, paths: Callable[[int], str] | None = None,
             on_batch: Callable[[EvalResult, int], None] | None = None) -> EvalResult:
    """Run ``classifier`` over labelled uint8 ``batches`` of ``(images, targets, indices, errors)``
    (`labelled_batches`, `TensorBatches`) and count top-1/top-5 hits.

    Each batch becomes the model's input with `model_input` (normalise, resize to ``resolution``) on
    ``device``. An image whose file could not be decoded raises `BadImageError` naming it (``paths``
    maps a sample index to its file), unless ``skip_bad_images``: then it is left out and listed in
    ``result.bad_images``. ``on_batch(result, n)`` is called after each batch of ``n`` images.
    ``result.seconds`` is the loop's wall time, data loading included, kept current as it runs.
    """
    result = result if result is not None else EvalResult()
    if paths is None:
        dataset = getattr(batches, "dataset", None)
        paths = (lambda i: str(dataset.samples[i].path)) if dataset is not None else (lambda i: f"#{i}")
    start, elapsed = time.perf_counter(), result.seconds
    for batch in run_batches(classifier, batches, resolution=resolution, mean=mean, std=std, device=device):
        for i, error in batch.bad():
            if not skip_bad_images:
                raise BadImageError(paths(i), error)
            result.bad_images.append((paths(i), error))
        if batch.outputs is not None:
            result.update(batch.outputs, batch.targets, batch.good_indices(), keep_predictions)
        result.seconds = elapsed + time.perf_counter() - start
        if on_batch is not None:
            on_batch(result, len(batch.errors))
    return result


@dataclass
class RunBatch:
    """One batch through a classifier: the dataset ``indices`` and decoding ``errors`` ("" for good) of all
    its images; ``outputs`` and ``targets`` of the good ones only, in order (None when none was good)."""

    indices: list[int]
    errors: list[str]
    outputs: Any
    targets: torch.Tensor | None

    def bad(self) -> list[tuple[int, str]]:
        """(index, reason) of each image that could not be decoded."""
        return [(i, e) for i, e in zip(self.indices, self.errors) if e]

    def good_indices(self) -> torch.Tensor:
        return torch.tensor([i for i, e in zip(self.indices, self.errors) if not e], dtype=torch.long)


def run_batches(classifier: Callable[[torch.Tensor], Any], batches: Iterable, *, resolution: int | None,
                mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                device: str | torch.device = "cpu") -> Iterator[RunBatch]:
    """The one batch loop: uint8 ``batches`` of ``(images, targets, indices, errors)`` become the model's input
    (`model_input`: normalise, resize to ``resolution``, on ``device``) and go through ``classifier``; images
    that could not be decoded are left out of the input and reported in the batch."""
    for images, targets, indices, errors in batches:
        good = [j for j, error in enumerate(errors) if not error]
        if len(good) < len(errors):
            keep = torch.tensor(good, dtype=torch.long)
            images, targets = images[keep], torch.as_tensor(targets)[keep]
        outputs = None
        if good:
            outputs = classifier(model_input(images.to(device, non_blocking=True), resolution, mean, std))
        yield RunBatch([int(i) for i in indices], list(errors), outputs, torch.as_tensor(targets) if good else None)
