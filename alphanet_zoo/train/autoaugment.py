"""AutoAugment with TensorFlow's ImageNet policy "v0", the one AlphaNet's recipe names.

Policy v0 is the table published with the EfficientNet / TPU reference implementation (25
sub-policies of two operations, each ``(name, probability, level)``, levels 0..10). It differs
from ``torchvision.transforms.AutoAugmentPolicy.IMAGENET``, which is the AutoAugment paper's
policy. The operations follow TensorFlow's definitions on uint8 RGB images (magnitudes scaled
from the level as TensorFlow does: rotate up to 30 degrees, shear up to 0.3, translate up to
250 pixels, posterize to ``int(level / 10 * 4)`` bits, solarize threshold ``int(level / 10 * 256)``,
solarize-add ``int(level / 10 * 110)`` below 128, colour factor ``level / 10 * 1.8 + 0.1``;
geometric operations fill with grey 128 and use nearest-neighbour sampling; rotate, shear and
translate take a random sign). They run on PIL images, so pixel rounding in the colour blend,
equalize and autocontrast can differ from TensorFlow's by one grey level.

Every random draw comes from the ``random.Random`` passed in, so an image's augmentation is
reproducible from a seed (exact resume of training).
"""
from __future__ import annotations

import random
from typing import Callable

from PIL import Image, ImageEnhance, ImageOps

from ..errors import InputError

MAX_LEVEL = 10.0
FILL = (128, 128, 128)
TRANSLATE_CONST = 250

#: TensorFlow TPU / EfficientNet AutoAugment ImageNet policy "v0".
POLICY_V0: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
    (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
    (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
    (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
    (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
    (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
    (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
    (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
    (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
    (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
    (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
    (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
    (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)

POLICIES = {"v0": POLICY_V0}


def _signed(value: float, rng: random.Random) -> float:
    return -value if rng.random() < 0.5 else value


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    # PIL maps each output pixel (x, y) to the input (a x + b y + c, d x + e y + f), as TF's transform does
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST, fillcolor=FILL)


def _solarize_add(img: Image.Image, addition: int, threshold: int = 128) -> Image.Image:
    lut = [min(255, max(0, i + addition)) if i < threshold else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    shift = 8 - bits  # TF keeps the top `bits` bits; 0 bits gives black
    lut = [(i >> shift) << shift if shift < 8 else 0 for i in range(256)]
    return img.point(lut * len(img.getbands()))


# name -> (image, level, rng) -> image
_OPS: dict[str, Callable[[Image.Image, float, random.Random], Image.Image]] = {
    "AutoContrast": lambda img, level, rng: ImageOps.autocontrast(img),
    "Equalize": lambda img, level, rng: ImageOps.equalize(img),
    "Invert": lambda img, level, rng: ImageOps.invert(img),
    "Rotate": lambda img, level, rng: img.rotate(_signed(level / MAX_LEVEL * 30.0, rng),
                                                 resample=Image.Resampling.NEAREST, fillcolor=FILL),
    "Posterize": lambda img, level, rng: _posterize(img, int(level / MAX_LEVEL * 4)),
    "Solarize": lambda img, level, rng: ImageOps.solarize(img, int(level / MAX_LEVEL * 256)),
    "SolarizeAdd": lambda img, level, rng: _solarize_add(img, int(level / MAX_LEVEL * 110)),
    "Color": lambda img, level, rng: ImageEnhance.Color(img).enhance(level / MAX_LEVEL * 1.8 + 0.1),
    "ShearX": lambda img, level, rng: _affine(img, (1, _signed(level / MAX_LEVEL * 0.3, rng), 0, 0, 1, 0)),
    "ShearY": lambda img, level, rng: _affine(img, (1, 0, 0, _signed(level / MAX_LEVEL * 0.3, rng), 1, 0)),
    "TranslateX": lambda img, level, rng: _affine(
        img, (1, 0, _signed(level / MAX_LEVEL * TRANSLATE_CONST, rng), 0, 1, 0)),
    "TranslateY": lambda img, level, rng: _affine(
        img, (1, 0, 0, 0, 1, _signed(level / MAX_LEVEL * TRANSLATE_CONST, rng))),
}


class AutoAugment:
    """Apply one random sub-policy of ``policy`` ("v0") to an RGB PIL image: ``aa(image, rng)``."""

    def __init__(self, policy: str = "v0") -> None:
        if policy not in POLICIES:
            raise InputError(f"unknown AutoAugment policy {policy!r}; available: {', '.join(POLICIES)}")
        self.policy_name = policy
        self.policy = POLICIES[policy]

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        if img.mode != "RGB":
            img = img.convert("RGB")
        for name, prob, level in self.policy[rng.randrange(len(self.policy))]:
            if rng.random() < prob:
                img = _OPS[name](img, float(level), rng)
        return img

    def __repr__(self) -> str:
        return f"AutoAugment(policy={self.policy_name!r})"


__all__ = ["AutoAugment", "POLICY_V0", "POLICIES"]
