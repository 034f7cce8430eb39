"""`predict`: top-k ImageNet classes, with names and probabilities, for images."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch
from PIL import Image

from .imagenet import imagenet_classes
from .images import load_image
from .transforms import transforms


def _open(image: Any) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        try:
            return load_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image not found: {path}") from None
        except (OSError, SyntaxError) as e:  # PIL: unidentified or truncated image
            raise ValueError(f"cannot read image {path}: {e}") from None
    raise TypeError(f"expected PIL images or image paths, got {type(image).__name__}")


def predict(model: torch.nn.Module, images: Iterable[Any] | Any, topk: int = 5,
            batch_size: int = 32) -> list[list[dict[str, Any]]]:
    """Top-``topk`` classes per image: ``[{"index", "synset", "name", "probability"}, ...]`` per image.

    ``images`` are PIL images or paths (one or a list); they go through the model's evaluation
    transform (`transforms`). The model runs in eval mode without gradients; a model with other than
    1000 classes reports indices only (``synset`` and ``name`` None).
    """
    if isinstance(images, (str, os.PathLike, Image.Image)):
        images = [images]
    images = list(images)
    num_classes = model.classifier.out_features
    if not 1 <= topk <= num_classes:
        raise ValueError(f"topk must be between 1 and {num_classes}, got {topk}")
    transform = transforms(model)
    classes = imagenet_classes() if num_classes == 1000 else None
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    results = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = torch.stack([transform(_open(im)) for im in images[start:start + batch_size]])
                probs = model(batch.to(device=param.device, dtype=param.dtype)).float().softmax(dim=1)
                values, indices = probs.topk(topk, dim=1)
                for vals, idxs in zip(values.tolist(), indices.tolist()):
                    results.append([{"index": i, "synset": classes[i].synset if classes else None,
                                     "name": classes[i].name if classes else None, "probability": p}
                                    for p, i in zip(vals, idxs)])
    finally:
        model.train(was_training)
    return results
