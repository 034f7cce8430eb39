"""An exported ONNX file as a classifier, run with ONNX Runtime, and what it says about itself.

The file's model record (`alphanet_zoo.record.ModelRecord`, with its preprocessing and
architecture) comes from its ``metadata_props`` entry ``config``, as ``alphanet-export`` writes it.
A file without one (a plain ``torch.onnx.export``) can still be evaluated when its input size is
static or ``--arch`` names its architecture.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from alphanet_zoo._io import parse_json
from alphanet_zoo.errors import InputError
from alphanet_zoo.record import ModelRecord

CONFIG_KEY = "config"


class OnnxModelError(InputError):
    """An ONNX file that cannot be evaluated as an image classifier."""


class OnnxClassifier:
    """An ONNX image classifier: ``classifier(images (N, 3, R, R) float tensor) -> logits tensor``.

    ``providers`` default to CUDA then CPU for ``device="cuda"`` and CPU otherwise. A file with a
    fixed batch size is fed in chunks of that size (the last one padded).
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxModelError(f"ONNX file not found: {self.path}")
        if providers is None:
            available = ort.get_available_providers()
            providers = ["CPUExecutionProvider"]
            if str(device).startswith("cuda"):
                if "CUDAExecutionProvider" not in available:
                    raise OnnxModelError("--device cuda: this onnxruntime has no CUDAExecutionProvider "
                                         "(install onnxruntime-gpu)")
                providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, bypassing Python
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise OnnxModelError(f"cannot load {self.path} with ONNX Runtime: {e}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise OnnxModelError(f"{self.path} has {len(inputs)} inputs; expected one image batch")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.input_shape = list(inputs[0].shape)
        if len(self.input_shape) != 4 or self.input_shape[1] not in (3, "3"):
            raise OnnxModelError(f"{self.path}: input {self.input_name!r} has shape {self.input_shape}; "
                                 "expected (N, 3, H, W)")
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map or {})
        self.fixed_batch = self.input_shape[0] if isinstance(self.input_shape[0], int) else None
        self._dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32

    def record(self) -> ModelRecord | None:
        """The file's model record (metadata entry ``config``), or None when it has none."""
        text = self.metadata.get(CONFIG_KEY)
        if text is None:
            return None
        return ModelRecord.from_dict(parse_json(text, f"{self.path}: metadata 'config'"),
                                     f"{self.path}: metadata 'config'")

    def static_resolution(self) -> int | None:
        """The input side when the file's input shape is static and square, else None."""
        h, w = self.input_shape[2:]
        if isinstance(h, int) and isinstance(w, int):
            if h != w:
                raise OnnxModelError(f"{self.path}: input is {h}x{w}; AlphaNet inputs are square")
            return h
        return None

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().numpy().astype(self._dtype, copy=False)
        if self.fixed_batch is None or self.fixed_batch == len(x):
            out = self._run(x)
        else:
            b, chunks = self.fixed_batch, []
            for start in range(0, len(x), b):
                chunk = x[start:start + b]
                n = len(chunk)
                if n < b:
                    chunk = np.concatenate([chunk, np.zeros((b - n, *chunk.shape[1:]), chunk.dtype)])
                chunks.append(self._run(chunk)[:n])
            out = np.concatenate(chunks)
        return torch.from_numpy(np.asarray(out, dtype=np.float32))
