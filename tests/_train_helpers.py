"""Helpers for the training and search tests: tiny generated image folders, torchrun runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

# distinct, saturated colours: a class is learnable from a few dozen steps
_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 50, 210), (40, 210, 220)]


def make_image_folder(root: Path, classes: list[str], per_class: int, size: int = 40, seed: int = 0) -> Path:
    """An ImageFolder tree ``root/<class>/<i>.png`` of noisy solid-colour images, one colour per class."""
    rng = np.random.RandomState(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = size + rng.randint(0, 9), size + rng.randint(0, 9)
            base = np.array(_COLOURS[c % len(_COLOURS)], dtype=np.float32)
            pixels = base + rng.normal(0, 25, (h, w, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def read_log(path: Path) -> list[dict]:
    """The JSON-lines training log as a list of records."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
