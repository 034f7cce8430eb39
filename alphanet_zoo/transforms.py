"""Preprocessing that travels with the weights: the evaluation transform of the published numbers.

PIL bicubic resize of the short side to 256, centre crop 224, to tensor, normalise with the
ImageNet mean and std, then a bicubic resize of that 224 tensor to the model's resolution.
The model's forward never resizes: this transform does.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = tuple(v / 255 for v in (123.675, 116.28, 103.53))
IMAGENET_STD = tuple(v / 255 for v in (58.395, 57.12, 57.375))


@dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs; stored in ``config.json`` and in ONNX metadata."""

    resolution: int  # the model's input side, after the final tensor resize
    resize_size: int = 256  # short side after the PIL resize
    crop_size: int = 224  # centre crop
    interpolation: str = "bicubic"  # for both resizes
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for k in ("mean", "std"):
            if k in known:
                known[k] = tuple(float(v) for v in known[k])
        return cls(**known)


def resize_to_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bicubic resize (align_corners False) of a (C, H, W) or (N, C, H, W) tensor to ``resolution``."""
    if x.shape[-1] == resolution and x.shape[-2] == resolution:
        return x
    batched = x.dim() == 4
    y = F.interpolate(x if batched else x.unsqueeze(0), size=(resolution, resolution), mode="bicubic",
                      align_corners=False)
    return y if batched else y.squeeze(0)


class EvalTransform:
    """PIL image (any mode) -> normalised float tensor (3, R, R). Picklable, for DataLoader workers."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        from torchvision import transforms as T

        self.preprocessing = p = preprocessing
        mode = T.InterpolationMode(p.interpolation)
        self._pil = T.Compose([T.Resize(p.resize_size, interpolation=mode), T.CenterCrop(p.crop_size),
                               T.ToTensor(), T.Normalize(p.mean, p.std)])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise TypeError(f"expected a PIL image, got {type(image).__name__}")
        if image.mode != "RGB":
            image = image.convert("RGB")
        return resize_to_resolution(self._pil(image), self.preprocessing.resolution)

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocessing})"


def preprocessing_for(model_or_arch: Any) -> Preprocessing:
    """The evaluation preprocessing of a model, a model name, or an `ArchConfig`."""
    from .registry import resolve_arch

    arch = getattr(model_or_arch, "arch", model_or_arch)
    return Preprocessing(resolution=resolve_arch(arch).resolution)


def transforms(model_or_name: Any) -> EvalTransform:
    """The evaluation transform for a model (``AlphaNet``), a model name, or an `ArchConfig`."""
    return EvalTransform(preprocessing_for(model_or_name))
