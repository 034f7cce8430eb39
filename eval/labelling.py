"""Labelling a dataset: one row of top-k classes per image, streamed, on any backend (`predict_dataset`).

Images are decoded and cropped in DataLoader workers (`alphanet_zoo.data.labelled_batches`, with no labels)
while the model runs; each batch goes through the one batch loop (`alphanet_zoo.data.run_batches`), so an
image gets the probabilities it gets in ``alphanet-eval``. An image that cannot be decoded is a row with an
``error``, never a crash and never a silent drop. Under torchrun each process labels its share of whole
batches (`alphanet_zoo.eval.loop.shard`); ``alphanet-predict`` merges the shares into one table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Collection, Iterable, Iterator, Sequence

import numpy as np
import torch

from ..data import Sample, batch_indices, collect_images, labelled_batches, run_batches
from ..device import parse_device
from ..errors import InputError
from ..imagenet import imagenet_classes
from ..prediction import check_topk, top_classes
from ..preprocessing import EvalCrop
from ..record import IMAGENET_LABELS
from .loop import Subject, file_subject, shard

OUTPUTS = ("logits", "features")


@dataclass
class LabelledBatch:
    """One batch's rows (in input order) and, with ``output``, its array of logits or features (the good
    images' rows, in order; None when none could be read)."""

    indices: list[int]
    rows: list[dict[str, Any]]
    array: np.ndarray | None = None


class _WithFeatures:
    """A PyTorch model's logits and pooled features (the pre-logits embedding) from one forward pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.forward_head(self.model.forward_features(images), pre_logits=True)
        return self.model.get_classifier()(features).float(), features.float()


def subject_for(model_or_file: Any, device: str | torch.device = "cpu", threads: int | None = None) -> Subject:
    """A `Subject` for a PyTorch model, an exported file's path, or a `Subject` as it is."""
    if isinstance(model_or_file, Subject):
        return model_or_file
    device = parse_device(device) if isinstance(device, str) else device
    if isinstance(model_or_file, torch.nn.Module):
        return Subject.of_model(model_or_file, device)
    if isinstance(model_or_file, (str, os.PathLike)):
        return file_subject(os.fspath(model_or_file), device, threads=threads)
    raise InputError(f"expected a model or an exported file's path, got {type(model_or_file).__name__}")


def num_classes_of(subject: Subject) -> int:
    if subject.record is None:
        raise InputError(f"{subject.name} carries no metadata (labels, preprocessing): export it with alphanet-export")
    return subject.record.num_classes


def label_batches(subject: Subject, paths: Sequence[str], *, topk: int, batch_size: int, workers: int = 0,
                  batches: Sequence[Sequence[int]] | None = None, output: str | None = None,
                  ) -> Iterator[LabelledBatch]:
    """Label ``paths`` batch by batch (``batches``: which indices, in order; default all, in batches of
    ``batch_size``). Rows: ``{"path", "top": [{"index", "synset", "name", "probability"}, ...]}`` or
    ``{"path", "error"}``."""
    record = subject.record
    check_topk(topk, num_classes_of(subject))
    if output not in (None, *OUTPUTS):
        raise InputError(f"unknown output {output!r}; known: {', '.join(OUTPUTS)}")
    classifier = subject.classifier
    if output == "features":
        model = getattr(classifier, "model", None)
        if subject.backend != "pytorch" or not hasattr(model, "forward_head"):
            raise InputError("features (the pooled embedding) need PyTorch weights: an exported file gives logits "
                             "only")
        classifier = _WithFeatures(model)
    labels = record.labels
    synsets = [c.synset for c in imagenet_classes()] if record.label_set == IMAGENET_LABELS else None
    p = subject.preprocessing
    order = [list(b) for b in batches] if batches is not None else batch_indices(len(paths), batch_size)
    if not order:
        return
    samples = [Sample(path, -1) for path in paths]
    loader = labelled_batches(samples, EvalCrop(p), p.crop_size, batch_size=batch_size, workers=workers,
                              batches=order, pin_memory=subject.device.type == "cuda")
    for batch in run_batches(classifier, loader, resolution=p.resolution, mean=p.mean, std=p.std,
                             device=subject.device):
        logits, array = batch.outputs, None
        if output is not None and logits is not None:
            logits, features = logits if output == "features" else (logits, logits)
            array = features.cpu().numpy().astype(np.float32, copy=False)
        tops = iter(top_classes(logits, topk, labels, synsets) if logits is not None else ())
        rows = [{"path": paths[i], "error": error} if error else {"path": paths[i], "top": next(tops)}
                for i, error in zip(batch.indices, batch.errors)]
        yield LabelledBatch(batch.indices, rows, array)


def predict_dataset(model_or_file: Any, inputs: Iterable[str | os.PathLike] | str | os.PathLike, *, topk: int = 5,
                    batch_size: int = 32, workers: int = 0, device: str | torch.device = "cpu",
                    threads: int | None = None, files_from: Any = None, output: str | None = None,
                    done: Collection[int] = ()) -> Iterator[dict[str, Any]]:
    """Label a dataset: yield one row per image, in input order, as it is computed (memory does not grow).

    ``model_or_file``: a PyTorch model (``alphanet_zoo.load(...)``) or an exported file's path (any format
    ``open_model`` runs). ``inputs``: image files, folders (walked recursively, sorted), glob patterns;
    ``files_from``: a file or text stream listing one path per line. Rows are ``{"path", "top": [{"index",
    "synset", "name", "probability"}, ...]}``, or ``{"path", "error"}`` for an image that cannot be read; with
    ``output="logits"`` or ``"features"`` each good row also has that array (numpy, float32). ``workers``
    DataLoader processes decode while the model runs. Under torchrun this process's share is yielded (whole
    batches k with k mod world = rank); batches whose images are all in ``done`` (input indices) are skipped.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    subject = subject_for(model_or_file, device, threads)
    paths = collect_images(inputs, files_from).paths
    share = shard(len(paths), batch_size) or batch_indices(len(paths), batch_size)
    done = set(done)
    todo = [b for b in share if not done.issuperset(b)]
    for batch in label_batches(subject, paths, topk=topk, batch_size=batch_size, workers=workers, batches=todo,
                               output=output):
        rows = iter(batch.array if batch.array is not None else ())
        for row in batch.rows:
            if output is not None and "top" in row:
                row[output] = next(rows)
            yield row
