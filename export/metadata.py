"""What travels inside an exported file, so its user needs nothing else: preprocessing, architecture,
license, class names, FLOPs, provenance.

ONNX keeps it as string key/value pairs (``metadata_props``; structured values are JSON), TorchScript
as one ``config.json`` extra file. `read_metadata` reads either back into the same dict.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

METADATA_FORMAT = "alphanet_zoo.export/1"
TORCHSCRIPT_METADATA_FILE = "config.json"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
RANDOM_INIT = "random-init"

# metadata_props values are strings: these keys hold JSON, the others plain text
_JSON_KEYS = frozenset({"architecture", "preprocessing", "class_names", "input", "output", "num_classes",
                        "mflops", "params"})


def published_name(model: nn.Module) -> str | None:
    """The registry name of a model's architecture (``a0``...), or None for a custom one."""
    from alphanet_zoo.registry import MODELS

    return next((name for name, info in MODELS.items() if info.arch == model.arch), None)


def export_metadata(model: nn.Module, *, name: str | None = None, license: str | None = None,
                    weights: str | None = None) -> dict[str, Any]:
    """The metadata of an exported `AlphaNet`: JSON-ready, one entry per fact.

    ``license`` defaults to the model's own (``pretrained_cfg``), else the AlphaNet weights' license
    (CC-BY-NC-4.0); pass ``"random-init"`` for untrained weights. ``weights`` says where they came from.
    """
    from alphanet_zoo import __version__
    from alphanet_zoo.flops import count_flops
    from alphanet_zoo.imagenet import NUM_CLASSES, class_names
    from alphanet_zoo.registry import PAPER, WEIGHTS_LICENSE
    from alphanet_zoo.transforms import preprocessing_for

    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch, num_classes = model.arch, model.num_classes
    resolution = arch.resolution
    meta: dict[str, Any] = {
        "format": METADATA_FORMAT,
        "model_name": name or cfg.get("name") or published_name(model) or "custom",
        "architecture": arch.to_dict(),
        "num_classes": num_classes,
        "preprocessing": preprocessing_for(model).to_dict(),
        "input": {"name": INPUT_NAME, "shape": ["batch", 3, resolution, resolution], "dtype": "float32",
                  "layout": "NCHW RGB, preprocessed as in 'preprocessing' (resize, crop, normalise)"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", num_classes], "dtype": "float32",
                   "meaning": "unnormalised class scores; softmax gives probabilities"},
        "license": license or cfg.get("license") or WEIGHTS_LICENSE,
        "weights": weights or cfg.get("source") or "unspecified",
        "mflops": round(count_flops(arch, num_classes), 2),
        "params": sum(p.numel() for p in model.parameters()),
        "paper": PAPER,
        "alphanet_zoo_version": __version__,
    }
    if num_classes == NUM_CLASSES:
        meta["class_names"] = class_names()
    return meta


def to_string_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata as ONNX ``metadata_props``: strings as they are, everything else as JSON."""
    return {k: v if isinstance(v, str) and k not in _JSON_KEYS else json.dumps(v) for k, v in metadata.items()}


def from_string_props(props: dict[str, str]) -> dict[str, Any]:
    """The inverse of `to_string_props`."""
    return {k: json.loads(v) if k in _JSON_KEYS else v for k, v in props.items()}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an exported ``.onnx`` or TorchScript file, as `export_metadata` made it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if zipfile.is_zipfile(path):  # a TorchScript archive; ONNX is protobuf
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_METADATA_FILE}")), None)
            if name is None:
                raise ValueError(f"{path} is a TorchScript archive without {TORCHSCRIPT_METADATA_FILE} metadata")
            return json.loads(archive.read(name).decode("utf-8"))
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return from_string_props({p.key: p.value for p in proto.metadata_props})
