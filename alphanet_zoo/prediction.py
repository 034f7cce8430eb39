"""`predict`: top-k classes, with labels and probabilities, for images; `top_classes`: the same of any logits
(``ExportedModel.predict`` of ``alphanet_zoo.export`` uses it)."""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import torch
from PIL import Image

from .data.images import load_image
from .errors import InputError
from .imagenet import imagenet_classes
from .preprocessing import transforms
from .record import IMAGENET_LABELS


def _open(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    raise InputError(f"expected PIL images or image paths, got {type(image).__name__}")


def check_topk(topk: Any, num_classes: int) -> None:
    """``topk`` must be an integer from 1 to ``num_classes``."""
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= num_classes:
        raise InputError(f"topk must be an integer from 1 to {num_classes}, got {topk!r}")


def top_classes(logits: Any, topk: int, labels: Sequence[str] | None = None,
                synsets: Sequence[str] | None = None) -> list[list[dict[str, Any]]]:
    """The ``topk`` classes of each row of ``logits`` (a tensor or an array), most probable first:
    ``[{"index", "synset", "name", "probability"}, ...]``, probabilities by softmax; ``synset`` and
    ``name`` None without ``synsets`` or ``labels``."""
    probs = torch.as_tensor(logits).float().softmax(dim=1)
    values, indices = probs.topk(topk, dim=1)
    return [[{"index": i, "synset": synsets[i] if synsets else None, "name": labels[i] if labels else None,
              "probability": p} for p, i in zip(vals, idxs)]
            for vals, idxs in zip(values.tolist(), indices.tolist())]


def predict(model: torch.nn.Module, images: Iterable[Any] | Any, topk: int = 5,
            batch_size: int = 32) -> list[list[dict[str, Any]]]:
    """Top-``topk`` classes per image: ``[{"index", "synset", "name", "probability"}, ...]`` per image.

    ``images`` are PIL images or paths (one or a list); they go through the model's evaluation
    transform (`transforms`). Probabilities are the softmax of the logits. Names come from the
    model's record (``pretrained_cfg.labels``; None when unknown); ``synset`` is the WordNet id for
    ImageNet-1k outputs, else None. An unreadable image raises `BadImageError` naming it.
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    images = list(images)
    check_topk(topk, model.classifier.out_features)
    record = getattr(model, "pretrained_cfg", None)
    labels = record.labels if record is not None else None
    synsets = ([c.synset for c in imagenet_classes()]
               if record is not None and record.label_set == IMAGENET_LABELS else None)
    transform = transforms(model)
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    results = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.stack([transform(_open(im)) for im in images[start:start + batch_size]])
                results += top_classes(model(batch.to(device=param.device, dtype=param.dtype)), topk, labels,
                                       synsets)
    finally:
        model.train(was_training)
    return results
