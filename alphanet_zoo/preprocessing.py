"""How images become model inputs: the preprocessing that travels with the weights.

Evaluation (the published numbers): PIL bicubic resize of the short side to 256, centre crop 224,
to tensor, normalise with the ImageNet mean and std, then a bicubic resize of that 224 tensor to
the model's resolution. BatchNorm calibration: the training-style random resized crop and flip
instead of resize-and-crop, then the same normalise and resize.

Every pipeline goes through two steps: a crop of the PIL image to a uint8 tensor (compact: it is
what data-loader workers return and what caches hold), then `model_input` of a uint8 batch
(normalise, resize). The same uint8 batch therefore always gives the same input tensor, bit for
bit, whichever command made it. The model's forward never resizes.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InputError, InputTypeError
from .registry import resolve_arch
from .schema import from_dict

IMAGENET_MEAN = tuple(v / 255 for v in (123.675, 116.28, 103.53))
IMAGENET_STD = tuple(v / 255 for v in (58.395, 57.12, 57.375))
INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                  "nearest": Image.Resampling.NEAREST}
#: The evaluation resize makes an intermediate image of the short side times the long side. Above
#: this many pixels (an extreme aspect ratio such as 1 x 100000) only the region the centre crop
#: keeps is resized, so no image can make it allocate more than a few tens of MB.
MAX_RESIZE_PIXELS = 16_000_000
MAX_RESOLUTION = 4096


@dataclass(frozen=True)
class Preprocessing:
    """How images become model inputs; stored in the model record (config.json, exported files)."""

    resolution: int  # the model's input side, after the final tensor resize
    resize_size: int = 256  # short side after the PIL resize
    crop_size: int = 224  # centre crop
    interpolation: str = "bicubic"  # for both resizes
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        for name in ("resolution", "resize_size", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_RESOLUTION:
                raise InputError(f"preprocessing {name} must be an integer from 1 to {MAX_RESOLUTION}, got {value!r}")
        if self.crop_size > self.resize_size:
            raise InputError(f"preprocessing crop_size {self.crop_size} is larger than resize_size {self.resize_size}")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"preprocessing interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                             f"got {self.interpolation!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            try:
                value = tuple(float(v) for v in value if not isinstance(v, (bool, str)))
            except (TypeError, ValueError):
                value = ()
            if len(value) != 3 or not all(math.isfinite(v) for v in value) or \
                    (name == "std" and not all(v > 0 for v in value)):
                raise InputError(f"preprocessing {name} must be 3 finite numbers{' above 0' if name == 'std' else ''}, "
                                 f"got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        """Build from `to_dict` output; unknown keys and bad values are an `InputError`."""
        return from_dict(cls, data, "preprocessing")


def resize_to_resolution(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bicubic resize (align_corners False) of a (C, H, W) or (N, C, H, W) tensor to ``resolution``
    (None or the current size: unchanged)."""
    if resolution is None or (x.shape[-1] == resolution and x.shape[-2] == resolution):
        return x
    batched = x.dim() == 4
    y = F.interpolate(x if batched else x.unsqueeze(0), size=(resolution, resolution), mode="bicubic",
                      align_corners=False)
    return y if batched else y.squeeze(0)


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 (…, 3, H, W) -> float32 normalised, exactly as ``ToTensor`` then ``Normalize`` compute it."""
    mean_t = torch.tensor(mean, dtype=torch.float32, device=images.device).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=images.device).view(3, 1, 1)
    return images.to(torch.float32).div(255).sub(mean_t).div(std_t)


def model_input(images: torch.Tensor, resolution: int | None, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """uint8 crops (N, 3, H, W) or (3, H, W) -> the model's float input: normalised, then resized to
    ``resolution`` (None: as they are). The one place a crop becomes an input."""
    return resize_to_resolution(normalize(images, mean, std), resolution)


def _pil_to_uint8(image: Image.Image) -> torch.Tensor:
    from torchvision.transforms.functional import pil_to_tensor

    return pil_to_tensor(image)


def _rgb(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise InputTypeError(f"expected a PIL image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def resized_short_side(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after resizing the short side to ``size``, as torchvision's ``Resize(size)``."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


class EvalCrop:
    """PIL image -> uint8 (3, crop, crop): resize the short side, centre crop (the evaluation crop).

    For ordinary images this is torchvision's ``Resize`` then ``CenterCrop``, pixel for pixel. When
    the resized image would exceed `MAX_RESIZE_PIXELS` (an extreme aspect ratio), only the source
    region the crop keeps is resized, so memory stays bounded. Picklable (data-loader workers).
    """

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, image: Image.Image) -> torch.Tensor:
        p = self.preprocessing
        image = _rgb(image)
        mode = INTERPOLATIONS[p.interpolation]
        w, h = image.size
        rw, rh = resized_short_side(w, h, p.resize_size)
        crop = p.crop_size
        top, left = int(round((rh - crop) / 2.0)), int(round((rw - crop) / 2.0))
        if rw * rh <= MAX_RESIZE_PIXELS:
            resized = image.resize((rw, rh), mode)
            if crop > min(rw, rh):  # torchvision pads a crop larger than the image
                from torchvision.transforms.functional import center_crop

                return _pil_to_uint8(center_crop(resized, [crop, crop]))
            return _pil_to_uint8(resized.crop((left, top, left + crop, top + crop)))
        sx, sy = w / rw, h / rh
        box = (left * sx, top * sy, (left + crop) * sx, (top + crop) * sy)
        return _pil_to_uint8(image.resize((crop, crop), mode, box=box))

    def __repr__(self) -> str:
        return f"EvalCrop({self.preprocessing})"


class EvalTransform:
    """PIL image (any mode) -> normalised float tensor (3, R, R): `EvalCrop` then `model_input`."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing
        self.crop = EvalCrop(preprocessing)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        p = self.preprocessing
        return model_input(self.crop(image), p.resolution, p.mean, p.std)

    def __repr__(self) -> str:
        return f"EvalTransform({self.preprocessing})"


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


class RandomCrop:
    """The training-style crop: random resized crop (scale ``scale``) to ``size``, random horizontal
    flip, as uint8. ``crop(image, rng)`` draws every random choice from ``rng``. BatchNorm
    calibration uses it as it is (the official recipe); training adds AutoAugment."""

    def __init__(self, size: int = 224, interpolation: str = "bicubic",
                 scale: Sequence[float] = (0.08, 1.0)) -> None:
        if interpolation not in INTERPOLATIONS:
            raise InputError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.size, self.interpolation, self.scale = int(size), interpolation, tuple(scale)

    def pil(self, image: Image.Image, rng: random.Random) -> Image.Image:
        """The crop as a PIL image (for further PIL augmentation)."""
        image = _rgb(image)
        top, left, h, w = random_resized_crop_box(image.width, image.height, rng, self.scale)
        image = image.crop((left, top, left + w, top + h)).resize((self.size, self.size),
                                                                 INTERPOLATIONS[self.interpolation])
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return image

    def __call__(self, image: Image.Image, rng: random.Random) -> torch.Tensor:
        return _pil_to_uint8(self.pil(image, rng))

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, interpolation={self.interpolation}, scale={self.scale})"


def preprocessing_for(model_or_arch: Any) -> Preprocessing:
    """The evaluation preprocessing of a model (its record's), a model name, or an `ArchConfig`."""
    record = getattr(model_or_arch, "pretrained_cfg", None)
    if record is not None and getattr(record, "preprocessing", None) is not None:
        return record.preprocessing
    arch = getattr(model_or_arch, "arch", model_or_arch)
    return Preprocessing(resolution=resolve_arch(arch).resolution)


def transforms(model_or_name: Any) -> EvalTransform:
    """The evaluation transform for a model (``AlphaNet``), a model name, or an `ArchConfig`."""
    return EvalTransform(preprocessing_for(model_or_name))
