"""What travels inside an exported file, so its user needs nothing else: the model's record.

The record (`alphanet_zoo.record.ModelRecord`: name, architecture, classes and labels,
preprocessing, metrics, calibration, license, provenance) is the very JSON a model folder keeps
as ``config.json``. ONNX keeps it as the ``metadata_props`` entry ``config``; TorchScript as the
extra file ``config.json``. `read_metadata` reads either back, validated.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from alphanet_zoo._io import parse_json
from alphanet_zoo.errors import InputError
from alphanet_zoo.record import ModelRecord

CONFIG_KEY = "config"
TORCHSCRIPT_METADATA_FILE = "config.json"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_metadata(model: nn.Module) -> dict[str, Any]:
    """The metadata of an exported `AlphaNet`: its record, as ``config.json`` holds it."""
    return model.pretrained_cfg.to_dict()


def to_string_props(metadata: dict[str, Any]) -> dict[str, str]:
    """Metadata as ONNX ``metadata_props``: the record as JSON under ``config``."""
    return {CONFIG_KEY: json.dumps(metadata)}


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The record of an exported ``.onnx`` or TorchScript file, as written (and validated)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if zipfile.is_zipfile(path):  # a TorchScript archive; ONNX is protobuf
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_METADATA_FILE}")), None)
            if name is None:
                raise InputError(f"{path} is a TorchScript archive without {TORCHSCRIPT_METADATA_FILE} metadata")
            text = archive.read(name)
    else:
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # onnx raises DecodeError and others for a file that is not ONNX
            raise InputError(f"{path} is not a readable ONNX file: {type(e).__name__}") from None
        props = {p.key: p.value for p in proto.metadata_props}
        if CONFIG_KEY not in props:
            raise InputError(f"{path} has no '{CONFIG_KEY}' metadata (not exported by alphanet-export?)")
        text = props[CONFIG_KEY]
    what = f"{path}: metadata '{CONFIG_KEY}'"
    data = parse_json(text, what)
    ModelRecord.from_dict(data, what)  # validates every field
    return data
