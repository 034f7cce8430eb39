"""The one way the package runs a model: `ExportedModel`, opened on any exported file by `open_model`
(`runtimes`, the table of runtimes) with the tuned settings of each runtime, once; `TorchModel.of` runs an
`AlphaNet` in memory the same way (eager, channels-last, ``torch.compile``, CUDA). The benchmark (`bench`),
the export's checks and timing (`deploy`) and the search's latency tables run models through it.

    >>> from alphanet_zoo.export import open_model
    >>> model = open_model("alphanet_a0.xml", threads=2)      # or .onnx, .pt (TorchScript), .pt2
    >>> x = model.preprocess(PIL.Image.open("cat.jpg"))[None]  # (1, 3, R, R) float32, as the file's record says
    >>> logits = model(x)                                      # a tensor for a tensor, an array for an array
    >>> model.metadata["labels"][int(logits.argmax())]

- ``.onnx``: ONNX Runtime on the CPU (CUDA with ``device="cuda"``): every graph optimization, ops
  one at a time with one inter-op thread, ``threads`` intra-op threads.
- ``.xml`` + ``.bin`` (OpenVINO IR): OpenVINO on the CPU, compiled for each batch size it is called
  with (static shapes; the last few kept) at the inference precision the export chose and verified
  (``bf16``, ``f32``); batch 1 (and any batch that does not divide among the threads) on one stream
  of ``threads`` threads, a batch that divides split into equal parts run at once on one stream
  per thread; threads pinned to cores; the input shared with OpenVINO, not copied.
- ``.pte`` (ExecuTorch, XNNPACK-delegated) and ``.tflite`` (LiteRT, XNNPACK delegate): the phone
  runtimes, run here on the CPU through their Python runtimes (``pip install 'alphanet_zoo[executorch]'``,
  ``'alphanet_zoo[litert]'``), ``threads`` threads; a ``.pte``'s record is the ``NAME.pte.json`` beside it.
- ``.pt`` (TorchScript, deprecated upstream) and ``.pt2`` (``torch.export``), and a model in memory
  (`TorchModel.of`): the module in inference mode, ``threads`` torch threads during the call.

What is called: ``model(x)`` with ``x`` a float32 (N, 3, R, R) numpy array or torch tensor gives
the logits (N, classes) as float32, of the same kind: a numpy array for an array, a CPU torch
tensor for a tensor (on ``x``'s device for the torch formats). ``model.metadata`` is the record
(the folder's ``config.json``; None for a file another tool wrote without one),
``model.export_info`` how the file was made (`metadata.read_export_info`), ``model.preprocess(image)``
the evaluation transform of a PIL image to a (3, R, R) tensor.

OpenVINO is imported only when an IR is opened (``pip install alphanet_zoo[openvino]``).
"""
from __future__ import annotations

import collections
import copy
import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alphanet_zoo.errors import AlphaNetError, InputError, brief
from alphanet_zoo.imagenet import imagenet_classes
from alphanet_zoo.prediction import _open, check_topk, top_classes
from alphanet_zoo.preprocessing import EvalTransform
from alphanet_zoo.record import IMAGENET_LABELS, ModelRecord

from .metadata import CONFIG_KEY, EXPORT_METADATA_FILE, TORCHSCRIPT_METADATA_FILE, export_metadata
from .native_quiet import to_log
from .timing import cpu_name, torch_threads

log = logging.getLogger("alphanet_zoo")
#: Compiled OpenVINO models kept per file, one per batch size (least recently used dropped first).
OPENVINO_CACHED_SHAPES = 4
OPENVINO_PIN_THREADS = True


class ModelOpenError(InputError):
    """An exported file that cannot be opened or run as an image classifier."""




# ---- ONNX Runtime ---------------------------------------------------------------------------------

def onnxruntime_session(path: str | os.PathLike, threads: int | None = None, *,
                        optimization: str = "all", providers: list[str] | None = None):
    """An ONNX Runtime session on ``path`` with our settings.

    ``threads`` sets the intra-op thread pool (None: ONNX Runtime's default, one per core); ops
    run one at a time (inter-op parallelism does not pay off on a chain-shaped CNN).
    ``optimization``: the graph optimization level, ``disable``, ``basic``, ``extended`` or ``all``.
    """
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    if optimization not in levels:
        raise InputError(f"unknown graph optimization level {optimization!r}; choose from {', '.join(levels)}")
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, bypassing Python
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def load_torchscript(path: str | os.PathLike, *, with_metadata: bool = False) -> Any:
    """``torch.jit.load`` of an exported module (on CPU); with ``with_metadata``, also its parsed metadata."""
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream in favour of torch.export, yet it is what C++/mobile
        # deployments load today; exporting it is this module's purpose.
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not with_metadata:
        return module
    text = extra[TORCHSCRIPT_METADATA_FILE]
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return module, json.loads(text) if text else {}


# ---- the common interface ---------------------------------------------------------------------------

class ExportedModel:
    """A model ready to run: ``model(x) -> logits``; see the module's docstring.

    ``images``: the input is a batch of RGB images (N, 3, R, R), checked as such; False for a graph of
    one layer (the latency tables time layers alone), whose input is any (N, C, H, W)."""

    format: str = ""
    backend: str = ""

    def __init__(self, path: Path | None, metadata: dict[str, Any] | None, export_info: dict[str, Any] | None,
                 threads: int | None, device: str, *, images: bool = True) -> None:
        self.path, self.metadata, self.export_info = path, metadata, export_info
        self.threads, self.device, self.images = threads, device, images
        self._record = None

    # -- what the file is
    @property
    def name(self) -> str:
        """How messages name the model: its file's name (the record's name for a model in memory)."""
        return self.path.name if self.path is not None else (self.metadata or {}).get("name") or self.backend

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16`` or ``int8``: what the export chose (``fp32`` for files without export info)."""
        return (self.export_info or {}).get("precision", "fp32")

    @property
    def runtime_precision(self) -> str:
        """The precision the runtime computes in (`precision`, unless the runtime was told otherwise)."""
        return self.precision

    @property
    def input_shape(self) -> list[int | str]:
        """The file's input shape, with a name (str) for each dynamic dimension."""
        raise NotImplementedError

    @property
    def resolution(self) -> int | None:
        """The input side: from the record, else from a static input shape, else None."""
        if self.metadata is not None:
            return int(self.metadata["preprocessing"]["resolution"])
        return self.static_resolution()

    def check_record(self, classes: int | None) -> None:
        """Refuse a record that does not describe this file: another input side, or another class count
        (``classes``: the file's output width, None where the runtime does not say)."""
        if self.metadata is None or not self.images:
            return
        record, side = self.record(), self.static_resolution()
        wanted = record.preprocessing.resolution
        if side is not None and side != wanted:
            raise ModelOpenError(f"{self.path}: its record says {wanted}x{wanted} inputs, the file takes {side}x{side} "
                                 "(a record of another model?)")
        if classes is not None and record.num_classes and classes != record.num_classes:
            raise ModelOpenError(f"{self.path}: its record says {record.num_classes} classes, the file gives "
                                 f"{classes} (a record of another model?)")

    def static_resolution(self) -> int | None:
        """The input side when the file's input height and width are static (and equal), else None."""
        h, w = self.input_shape[2:4]
        if isinstance(h, int) and isinstance(w, int):
            if h != w:
                raise ModelOpenError(f"{self.path}: input is {h}x{w}; AlphaNet inputs are square")
            return h
        return None

    def record(self) -> ModelRecord | None:
        """The file's `alphanet_zoo.record.ModelRecord`, or None for a file without one."""
        if self.metadata is None:
            return None
        if self._record is None:
            self._record = ModelRecord.from_dict(self.metadata, f"{self.path}: metadata '{CONFIG_KEY}'")
        return self._record

    def preprocess(self, image) -> torch.Tensor:
        """A PIL image -> the (3, R, R) float32 input, by the record's evaluation preprocessing."""
        record = self.record()
        if record is None:
            raise ModelOpenError(f"{self.path} carries no preprocessing metadata (not exported by alphanet-export)")
        return EvalTransform(record.preprocessing)(image)

    def predict(self, images, topk: int = 5, batch_size: int = 32) -> list[list[dict[str, Any]]]:
        """Top-``topk`` classes per image (PIL images or paths), as `alphanet_zoo.predict` gives them:
        ``[{"index", "synset", "name", "probability"}, ...]`` per image (softmax of the logits)."""
        record = self.record()
        if record is None:
            raise ModelOpenError(f"{self.path} carries no metadata (labels, preprocessing): not exported by "
                                 "alphanet-export")
        check_topk(topk, record.num_classes)
        if not isinstance(images, (list, tuple)):
            images = [images]
        synsets = [c.synset for c in imagenet_classes()] if record.label_set == IMAGENET_LABELS else None
        results = []
        for start in range(0, len(images), batch_size):
            batch = torch.stack([self.preprocess(_open(im)) for im in images[start:start + batch_size]])
            results += top_classes(self(batch), topk, record.labels, synsets)
        return results

    @classmethod
    def from_file(cls, path: Path, metadata: dict[str, Any] | None, export_info: dict[str, Any] | None,
                  threads: int | None, device: str, **options: Any) -> "ExportedModel":
        """The model of the file at ``path`` (what `open_model` calls on its format's runtime)."""
        return cls(path, metadata, export_info, threads, device, **options)

    # -- running it
    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        if isinstance(x, torch.Tensor):
            return self._run_tensor(x)
        if isinstance(x, np.ndarray):
            return self._run_numpy(np.ascontiguousarray(x, dtype=np.float32))
        raise InputError(f"expected a numpy array or a torch tensor of images, got {type(x).__name__}")

    def as_input(self, x: torch.Tensor) -> np.ndarray | torch.Tensor:
        """``x`` (float32, on the CPU) as this model takes it without converting it on each call (what a
        benchmark prepares before its clock starts): a numpy array for the runtimes of files."""
        return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())

    def synchronize(self) -> None:
        """Wait for work the last call left running (CUDA); before a clock is read."""

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        out = self._run_numpy(np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy()))
        return torch.from_numpy(out)

    def _check_input(self, x: np.ndarray | torch.Tensor) -> None:
        if not self.images:
            return
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"expected images as (N, 3, H, W), got shape {list(x.shape)}")
        side = self.resolution
        if side is not None and tuple(x.shape[2:]) != (side, side):
            raise InputError(f"{self.name} takes {side}x{side} inputs, got {x.shape[2]}x{x.shape[3]} "
                             "(preprocess images with model.preprocess)")

    def close(self) -> None:
        """Release the runtime's resources (the object cannot run afterwards)."""

    def __enter__(self) -> "ExportedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        name = (self.metadata or {}).get("name")
        where = str(self.path) if self.path is not None else None
        return (f"{type(self).__name__}({where!r}, model={name!r}, precision={self.precision!r}, "
                f"threads={self.threads}, device={self.device!r})")


# ---- ONNX ---------------------------------------------------------------------------------------------

class OnnxRuntimeModel(ExportedModel):
    """An ``.onnx`` file on ONNX Runtime. A file with a fixed batch size is fed in chunks of that size."""

    format, backend = "onnx", "onnxruntime"

    def __init__(self, path, metadata, export_info, threads, device, *, images: bool = True) -> None:
        super().__init__(path, metadata, export_info, threads, device, images=images)
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ModelOpenError("device cuda: this onnxruntime has no CUDAExecutionProvider "
                                     "(install onnxruntime-gpu)")
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.device(device).index or 0}))
        elif device != "cpu":
            raise InputError(f"ONNX Runtime runs on cpu or cuda, not {device!r}")
        try:
            self.session = onnxruntime_session(path, threads, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for a bad file
            raise ModelOpenError(f"cannot load {path} with ONNX Runtime: {brief(e)}") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelOpenError(f"{path} has {len(inputs)} inputs; expected one image batch")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.output_names = [o.name for o in outputs]
        self._shape = list(inputs[0].shape)
        if images and (len(self._shape) != 4 or self._shape[1] not in (3, "3")):
            raise ModelOpenError(f"{path}: input {self.input_name!r} has shape {self._shape}; expected (N, 3, H, W)")
        self.fixed_batch = self._shape[0] if isinstance(self._shape[0], int) else None
        self._dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        static = [d for d in self._shape[2:] if isinstance(d, int)]
        if self.metadata is not None and len(static) == 2 and static[0] != self.resolution:
            raise ModelOpenError(f"{path}: input size {static[0]} disagrees with its preprocessing resolution "
                                 f"{self.resolution}")

    @property
    def input_shape(self) -> list[int | str]:
        return [d if isinstance(d, int) else str(d) for d in self._shape]

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def run_outputs(self, x: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """Every output of the graph (a features model's maps), in the graph's order, for one batch."""
        if isinstance(x, torch.Tensor):
            x = x.detach().to("cpu", torch.float32).numpy()
        self._check_input(x)
        return self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, dtype=self._dtype)})

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        x = x.astype(self._dtype, copy=False)
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
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        self.__dict__.pop("session", None)


# ---- OpenVINO -------------------------------------------------------------------------------------------

_core = None
_core_lock = threading.Lock()


def openvino_core():
    """The process's ``openvino.Core`` (created on first use; OpenVINO imported only then).

    One Core, kept for the life of the process, and never a second: OpenVINO's CPU plugin (2026.4)
    installs an alternate signal stack on the thread that compiles and, when two Cores are destroyed
    in the order they were made, leaves the thread pointing at the freed one; the next signal with a
    Python handler (torch's DataLoader installs one for SIGCHLD) then kills the process with SIGSEGV."""
    global _core
    with _core_lock:
        if _core is None:
            try:
                import openvino
            except ImportError:
                raise ModelOpenError("opening an OpenVINO IR needs OpenVINO: pip install 'alphanet_zoo[openvino]'") \
                    from None
            _core = openvino.Core()
        return _core


def openvino_supports(precision: str, device: str = "CPU") -> bool:
    """Whether OpenVINO runs ``precision`` (``fp32``, ``bf16``, ``int8``) natively on ``device``."""
    capabilities = openvino_core().get_property(device, "OPTIMIZATION_CAPABILITIES")
    return {"fp32": "FP32", "bf16": "BF16", "int8": "INT8"}[precision] in capabilities


def available_cores() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def openvino_config(threads: int | None, inference_precision: str | None, streams: int = 1,
                    pin: bool | None = None) -> dict[str, Any]:
    """Our OpenVINO CPU compile settings: one stream of ``threads`` threads (latency), or ``streams``
    streams sharing them (throughput); threads pinned to cores unless ``pin`` is False (default
    `OPENVINO_PIN_THREADS`); figures in ``benchmarks/README_deploy.md``."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
                              "NUM_STREAMS": streams,
                              "ENABLE_CPU_PINNING": OPENVINO_PIN_THREADS if pin is None else pin}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    if inference_precision is not None:
        config["INFERENCE_PRECISION_HINT"] = inference_precision
    return config


class OpenVinoModel(ExportedModel):
    """An OpenVINO IR (``.xml`` beside its ``.bin``; or an ``.onnx`` file, read by OpenVINO's ONNX front
    end), compiled for each input shape (batch size) it is called with.

    A batch that divides evenly among the threads (``threads`` cores; all the process may use when
    None) runs as that many equal parts at once, one per stream of one thread (the throughput
    setting): AlphaNet's depthwise convolutions, squeeze-excite and small tensors keep two threads
    on one image far from busy, while two images on two threads keep both cores working. Any other
    batch (batch 1 above all), or every batch with ``split=False``, runs whole on one stream of
    ``threads`` threads (the latency setting). Calls are serialised (one at a time per object).

    ``tuned=False``: OpenVINO's own defaults instead, as a user compiles a file by hand (the file's
    shapes as they are, only the thread count set; bf16 on CPUs that have it): the baseline of the
    benchmark.
    """

    format, backend = "openvino", "openvino"

    def __init__(self, path, metadata, export_info, threads, device, *, bin_path: Path | None = None,
                 inference_precision: str | None = None, split: bool = True, pin: bool | None = None,
                 tuned: bool = True, images: bool = True) -> None:
        super().__init__(path, metadata, export_info, threads, device, images=images)
        if device not in ("cpu", "CPU"):
            raise InputError(f"OpenVINO IR files run on the cpu here, not {device!r}")
        self.split, self.pin, self.tuned = split, pin, tuned
        core = openvino_core()
        if path.suffix.lower() != ".onnx":
            bin_path = bin_path or path.with_suffix(".bin")
            if not bin_path.is_file():
                raise ModelOpenError(f"{path}: its weights file {bin_path.name} is not beside it")
        try:
            self.model = core.read_model(str(path), str(bin_path)) if bin_path else core.read_model(str(path))
        except Exception as e:  # OpenVINO raises RuntimeError with a long message for a bad IR
            raise ModelOpenError(f"cannot read {path} with OpenVINO: {brief(e)}") from None
        if len(self.model.inputs) != 1:
            raise ModelOpenError(f"{path} has {len(self.model.inputs)} inputs; expected one image batch")
        if inference_precision is None:
            runtime = (export_info or {}).get("runtime") or {}
            inference_precision = runtime.get("inference_precision")
        if inference_precision == "bf16" and not openvino_supports("bf16"):
            log.warning("%s was exported for bf16, which this CPU does not run natively: running it in f32",
                        path.name)
            inference_precision = "f32"
        self.inference_precision = inference_precision
        self.streams = threads or available_cores()
        self._compiled: collections.OrderedDict[tuple, list] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._default = None
        if not tuned:
            config = {"INFERENCE_NUM_THREADS": threads} if threads is not None else {}
            self._default = self._compile(self.model, config, "its own shapes").create_infer_request()

    @property
    def input_shape(self) -> list[int | str]:
        shape = self.model.inputs[0].get_partial_shape()
        return [d.get_length() if d.is_static else "?" for d in shape]

    @property
    def runtime_precision(self) -> str:
        hint = self.inference_precision
        if self._default is not None:  # what OpenVINO chose by itself
            hint = self._default.get_compiled_model().get_property("INFERENCE_PRECISION_HINT").get_type_name()
        return {"bf16": "bf16", "f16": "fp16", "f32": "fp32"}.get(hint, self.precision)

    def plan(self, batch: int) -> tuple[int, int]:
        """(parts, images per part) for a batch: split across the streams when it divides evenly."""
        streams = min(self.streams, batch)
        if self.split and streams > 1 and batch % streams == 0:
            return streams, batch // streams
        return 1, batch

    def _compile(self, model, config: dict[str, Any], what: str):
        try:
            return openvino_core().compile_model(model, "CPU", config)
        except Exception as e:
            raise ModelOpenError(f"OpenVINO cannot compile {self.name} for {what}: {brief(e)}") from None

    def requests(self, batch: int, sample: tuple[int, ...] | None = None) -> list:
        """The infer requests that run a batch of ``batch`` inputs of shape ``sample`` (default: images at
        the model's resolution), compiled on first use, one per part."""
        parts, size = self.plan(batch)
        if sample is None:
            side = self.resolution
            if side is None:
                raise ModelOpenError(f"{self.path}: cannot tell its input size (no metadata, dynamic shape)")
            sample = (3, side, side)
        key = (parts, size, *sample)
        with self._lock:
            requests = self._compiled.get(key)
            if requests is not None:
                self._compiled.move_to_end(key)
                return requests
            model = self.model.clone()
            model.reshape({model.inputs[0]: [size, *sample]})
            config = openvino_config(self.threads, self.inference_precision, streams=parts, pin=self.pin)
            compiled = self._compile(model, config, f"{size} inputs")
            requests = [compiled.create_infer_request() for _ in range(parts)]
            self._compiled[key] = requests
            while len(self._compiled) > OPENVINO_CACHED_SHAPES:
                self._compiled.popitem(last=False)
            return requests

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        with self._lock:
            requests = [self._default] if self._default is not None else self.requests(len(x), x.shape[1:])
            try:
                if len(requests) == 1:
                    out = requests[0].infer(x, share_inputs=True, share_outputs=True)[0]
                    return np.array(out, dtype=np.float32)  # a copy: the request reuses its output buffer
                size = len(x) // len(requests)
                for i, request in enumerate(requests):
                    request.start_async(x[i * size:(i + 1) * size], share_inputs=True)
                for request in requests:
                    request.wait()
                return np.concatenate([r.get_output_tensor(0).data for r in requests]).astype(np.float32, copy=False)
            except Exception as e:
                raise AlphaNetError(f"OpenVINO failed to run {self.name}: {brief(e)}") from None

    def close(self) -> None:
        with self._lock:
            self._compiled.clear()
            self._default = None


# ---- mobile runtimes: ExecuTorch (XNNPACK) and LiteRT ------------------------------------------------------

_EXECUTORCH_POOL = {"generation": 0}  # bumped each time ExecuTorch's process-wide thread pool is replaced


def executorch_runtime():
    """ExecuTorch's Python runtime, or an error that says how to install it."""
    try:
        with to_log():
            from executorch.runtime import Runtime
    except ImportError:
        raise ModelOpenError("running a .pte needs ExecuTorch: pip install 'alphanet_zoo[executorch]'") from None
    with to_log():  # its first use probes the CPU, printing from C++
        return Runtime.get()


def executorch_threads(threads: int) -> None:
    """Size ExecuTorch's thread pool (one per process, shared by every program) to ``threads``.

    Replacing the pool frees the old one, which the XNNPACK runtimes of methods loaded before hold:
    `ExecuTorchModel` reloads its method after any replacement (`_EXECUTORCH_POOL`)."""
    with to_log():  # the pool's first use probes the CPU, printing from C++
        from executorch.extension.pybindings import portable_lib

        if portable_lib._threadpool_get_thread_count() != threads:
            portable_lib._unsafe_reset_threadpool(threads)
            _EXECUTORCH_POOL["generation"] += 1


class ExecuTorchModel(ExportedModel):
    """An ExecuTorch program (``.pte``, XNNPACK-delegated) on ExecuTorch's Python runtime, on the CPU: what
    a phone runs, here on this machine's cores. ``threads`` (None: every core) sizes ExecuTorch's thread
    pool, which is one per process: a model whose thread count differs from the last one run resizes it
    and reloads its method first. A batch larger than the program's upper bound runs in chunks."""

    format, backend = "executorch", "executorch"

    def __init__(self, path, metadata, export_info, threads, device, *, images: bool = True) -> None:
        super().__init__(path, metadata, export_info, threads, device, images=images)
        if device not in ("cpu", "CPU"):
            raise InputError(f"ExecuTorch programs run on the cpu here, not {device!r}")
        runtime = executorch_runtime()
        self.pool_threads = threads or available_cores()
        try:
            with to_log():
                self.program = runtime.load_program(Path(path))
            meta = self.program.metadata("forward")
        except Exception as e:  # ExecuTorch raises RuntimeError/ValueError for a bad program
            raise ModelOpenError(f"cannot load {path} with ExecuTorch: {brief(e)}") from None
        if meta.num_inputs() != 1:
            raise ModelOpenError(f"{path} has {meta.num_inputs()} inputs; expected one image batch")
        self._shape = list(meta.input_tensor_meta(0).sizes())
        if images and (len(self._shape) != 4 or self._shape[1] != 3):
            raise ModelOpenError(f"{path}: input has shape {self._shape}; expected (N, 3, H, W)")
        self.max_batch = max(1, int(self._shape[0]))  # the upper bound of a dynamic batch
        if meta.num_outputs() >= 1:
            self.check_record(int(list(meta.output_tensor_meta(0).sizes())[-1]))
        self._lock = threading.RLock()
        self._method, self._generation = None, -1
        self._ready()

    @property
    def input_shape(self) -> list[int | str]:
        return ["batch", *self._shape[1:]]

    def _ready(self):
        """The method, loaded after the thread pool was sized for this model."""
        executorch_threads(self.pool_threads)
        if self._method is None or self._generation != _EXECUTORCH_POOL["generation"]:
            self._method = None
            try:
                with to_log():
                    self._method = self.program.load_method("forward")
            except Exception as e:
                raise ModelOpenError(f"ExecuTorch cannot load the method of {self.name}: {brief(e)}") from None
            self._generation = _EXECUTORCH_POOL["generation"]
        return self._method

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        with self._lock:
            method = self._ready()
            try:
                outs = [method.execute([torch.from_numpy(x[i:i + self.max_batch])])[0].numpy().copy()
                        for i in range(0, len(x), self.max_batch)]
            except Exception as e:
                raise AlphaNetError(f"ExecuTorch failed to run {self.name}: {brief(e)}") from None
        return np.concatenate(outs).astype(np.float32, copy=False)

    def close(self) -> None:
        with self._lock:
            self._method = None


def litert_interpreter(path: Path | None = None, content: bytes | None = None, threads: int | None = None):
    """LiteRT's interpreter (XNNPACK delegate, ``threads`` threads) on a ``.tflite`` file or its bytes."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ModelOpenError("running a .tflite needs LiteRT: pip install 'alphanet_zoo[litert]'") from None
    return Interpreter(model_path=str(path) if content is None else None, model_content=content,
                       num_threads=threads or available_cores())


class LiteRtModel(ExportedModel):
    """A ``.tflite`` flatbuffer on LiteRT's interpreter (``ai-edge-litert``) with its XNNPACK delegate, on the
    CPU: what Android runs, here on this machine's cores. The file's input has a fixed batch (1): a larger
    batch runs image by image. An int8 file's quantized input and output are converted here (its
    scale and zero point), so every file takes and gives float32."""

    format, backend = "tflite", "litert"

    def __init__(self, path, metadata, export_info, threads, device, *, content: bytes | None = None,
                 images: bool = True) -> None:
        super().__init__(path, metadata, export_info, threads, device, images=images)
        if device not in ("cpu", "CPU"):
            raise InputError(f"LiteRT files run on the cpu here, not {device!r}")
        try:
            with to_log():
                self.interpreter = litert_interpreter(path, content, threads)
                self.interpreter.allocate_tensors()
        except ModelOpenError:
            raise
        except Exception as e:  # LiteRT raises ValueError/RuntimeError for a bad flatbuffer
            raise ModelOpenError(f"cannot load {path} with LiteRT: {brief(e)}") from None
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelOpenError(f"{path} has {len(inputs)} inputs; expected one image batch")
        self._input, self._output = inputs[0], outputs[0]
        self._shape = [int(d) for d in self._input["shape"]]
        if images and (len(self._shape) != 4 or self._shape[1] != 3):
            raise ModelOpenError(f"{path}: input has shape {self._shape}; expected (N, 3, H, W)")
        self.fixed_batch = self._shape[0]
        self.check_record(int(self._output["shape"][-1]) if len(self._output["shape"]) else None)
        self._lock = threading.RLock()

    @property
    def input_shape(self) -> list[int | str]:
        return list(self._shape)

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        self._check_input(x)
        n, quantized = self.fixed_batch, self._input["dtype"] != np.float32
        outs = []
        with self._lock:
            try:
                for i in range(0, len(x), n):
                    chunk = x[i:i + n]
                    if len(chunk) < n:  # the last, short chunk: padded to the file's batch
                        chunk = np.concatenate([chunk, np.zeros((n - len(chunk), *chunk.shape[1:]), np.float32)])
                    if quantized:
                        scale, zero = self._input["quantization"]
                        info = np.iinfo(self._input["dtype"])
                        chunk = np.clip(np.round(chunk / scale) + zero, info.min, info.max).astype(self._input["dtype"])
                    self.interpreter.set_tensor(self._input["index"], chunk)
                    self.interpreter.invoke()
                    out = self.interpreter.get_tensor(self._output["index"])
                    if out.dtype != np.float32:
                        scale, zero = self._output["quantization"]
                        out = (out.astype(np.float32) - zero) * scale
                    outs.append(np.array(out[:len(x) - i], dtype=np.float32))
            except Exception as e:
                raise AlphaNetError(f"LiteRT failed to run {self.name}: {brief(e)}") from None
        return np.concatenate(outs)

    def close(self) -> None:
        self.interpreter = None


# ---- torch formats -----------------------------------------------------------------------------------

class TorchModel(ExportedModel):
    """A torch module run in inference mode with ``threads`` torch threads: an eager model (`of`) or a
    loaded file (`TorchScriptModel`, `Pt2Model`). Tensors in give tensors on ``x``'s device out."""

    format, backend = "pytorch", "eager"

    def __init__(self, path, metadata, export_info, threads, device, module: nn.Module, *,
                 images: bool = True) -> None:
        super().__init__(path, metadata, export_info, threads, device, images=images)
        self.torch_device = torch.device(device)
        self.module = module.to(self.torch_device) if self.torch_device.type != "cpu" else module

    @classmethod
    def of(cls, model: nn.Module, *, threads: int | None = None, device: str = "cpu", channels_last: bool = False,
           compile: bool = False, images: bool = True) -> "TorchModel":
        """``model`` (an `AlphaNet`, or any module with ``images=False``) in eval mode, run as it is built
        (on the CPU, NCHW: the model itself, not a copy), or a copy of it: with channels-last weights, on
        ``device`` (``cuda``), compiled by ``torch.compile`` (inductor; its first calls take minutes)."""
        net = model.eval()
        if channels_last or compile or torch.device(device).type != "cpu":
            net = copy.deepcopy(model).eval().to(torch.device(device))
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        record = getattr(model, "pretrained_cfg", None)
        variant = cls(None, export_metadata(model) if record is not None else None, None, threads, device,
                      torch.compile(net) if compile else net, images=images)
        variant.backend = "compile" if compile else "eager"
        variant._side = getattr(getattr(model, "arch", None), "resolution", None)
        return variant

    _side: int | None = None  # a model in memory without a record: its architecture's resolution
    loader = ""  # a file's (`TorchScriptModel`, `Pt2Model`): what loads it (`load`), as errors name it

    @staticmethod
    def load(path: Path) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def from_file(cls, path, metadata, export_info, threads, device, **options) -> "TorchModel":
        try:
            module = cls.load(path)
        except Exception as e:  # torch's loaders raise RuntimeError, ValueError, zip errors... on a bad file
            raise ModelOpenError(f"{cls.loader} cannot load {path}: {brief(e)}") from None
        return cls(path, metadata, export_info, threads, device, module, **options)

    @property
    def resolution(self) -> int | None:
        return super().resolution if self.metadata is not None else self._side

    @property
    def input_shape(self) -> list[int | str]:
        side = self.resolution
        return ["batch", 3, side, side] if side else ["batch", 3, "height", "width"]

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.torch_device, torch.float32)

    def synchronize(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        with torch_threads(self.threads), torch.inference_mode():
            return self.module(x.to(self.torch_device, torch.float32)).float()

    def _run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x).to(x.device)

    def _run_numpy(self, x: np.ndarray) -> np.ndarray:
        return self._forward(torch.from_numpy(x)).cpu().numpy()


class TorchScriptModel(TorchModel):
    """A TorchScript ``.pt`` (deprecated upstream in favour of torch.export; kept for C++ users)."""

    format, backend, loader = "torchscript", "torchscript", "torch.jit.load"
    load = staticmethod(lambda path: load_torchscript(path).eval())


class Pt2Model(TorchModel):
    """A ``torch.export`` ExportedProgram (``.pt2``), run as its ``.module()``."""

    format, backend, loader = "pt2", "pt2", "torch.export.load"
    load = staticmethod(lambda path: load_exported_program(path).module())


def load_exported_program(path: str | os.PathLike, *, with_metadata: bool = False) -> Any:
    """``torch.export.load`` of a ``.pt2`` file; with ``with_metadata``, also its extra files' text."""
    extra = {TORCHSCRIPT_METADATA_FILE: "", EXPORT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export warns about its own internals on load
        program = torch.export.load(str(path), extra_files=extra)
    return (program, extra) if with_metadata else program


__all__ = ["cpu_name", "ExecuTorchModel", "ExportedModel", "LiteRtModel", "ModelOpenError", "OnnxRuntimeModel",
           "OpenVinoModel", "Pt2Model", "TorchModel", "TorchScriptModel", "executorch_runtime", "executorch_threads",
           "litert_interpreter", "load_exported_program", "load_torchscript",
           "onnxruntime_session", "openvino_config", "openvino_core", "openvino_supports",
           "torch_threads"]
