"""Proof that an exported file computes what the PyTorch model computes.

fp32 files: `verify_onnx`: ``onnx.checker`` (full check, with strict shape inference), a look at
the graph (input and output names, no unfolded BatchNorm), then ONNX Runtime against the model on
random inputs. `verify_torchscript`, `verify_pt2`, `verify_openvino`: the file loaded back by its
own runtime (through `open_model`'s settings) against the model. Each raises
`ExportVerificationError` when the largest absolute difference of the logits exceeds the tolerance.

Reduced precision (bf16, int8) cannot match to 1e-4: it is held to agreement bars on real images
instead (`export.agreement`), by `check_agreement`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from alphanet_zoo.errors import AlphaNetError, brief

from .metadata import INPUT_NAME, OUTPUT_NAME, output_names, sidecar_path
from .runtime import (ModelOpenError, OnnxRuntimeModel, OpenVinoModel, Pt2Model, TorchScriptModel,
                      load_exported_program, load_torchscript)

DEFAULT_TOLERANCE = 1e-4
TRACE_BATCH_SIZE = 2  # the dummy batch an export is traced with (verification then uses other sizes)
# Batch sizes to verify a dynamic-batch export at: neither is the traced size (2), and 1 catches
# a squeezed batch dimension.
VERIFY_BATCH_SIZES = (1, 3)
# Ops an eval-mode AlphaNet graph must not hold: BatchNorm belongs folded into the convolutions,
# dropout is a no-op at inference.
FORBIDDEN_ONNX_OPS = frozenset({"BatchNormalization", "Dropout"})


class ExportVerificationError(AlphaNetError, RuntimeError):
    """An exported file failed its checks: malformed, or its outputs differ from the PyTorch model's."""


@dataclass(frozen=True)
class Verification:
    """What a verification checked and found.

    fp32: ``max_abs_diff`` of the logits on random inputs at ``batch_sizes``, within ``tolerance``.
    bf16 and int8: ``tolerance`` is None and the file passed ``thresholds`` on ``agreement``
    (`export.agreement.Agreement` as a dict: cosine, top-1 agreement, top-5 overlap on real images).
    fp32 files carry their agreement too, for the record.
    """

    format: str  # "onnx", "openvino", "torchscript" or "pt2"
    runtime: str  # what ran the file, with its version
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    tolerance: float | None
    checks: tuple[str, ...] = ()  # structural checks passed before running it
    precision: str = "fp32"
    agreement: dict[str, Any] | None = None
    thresholds: dict[str, float] | None = None

    def summary(self) -> str:
        """One line for a command's output."""
        parts = list(self.checks)
        if self.tolerance is not None:
            parts.append(f"{self.runtime} vs PyTorch: max abs diff {self.max_abs_diff:.2e} "
                         f"(batch {', '.join(map(str, self.batch_sizes))}; tolerance {self.tolerance:.0e})")
        else:
            parts.append(f"{self.runtime}, {self.precision}")
        if self.agreement:
            a = self.agreement
            bars = f"; bars: cosine >= {self.thresholds['min_cosine']:g}" if self.thresholds else ""
            parts.append(f"vs fp32 PyTorch on {a['images']} images ({a['data']}): logit cosine min "
                         f"{a['cosine_min']:.6f}, top-1 agreement {100 * a['top1_agreement']:.1f} %, top-5 overlap "
                         f"{100 * a['top5_overlap']:.1f} %{bars}")
        return f"verified: {'; '.join(parts)}"

    def with_agreement(self, agreement: dict[str, Any] | None, thresholds: dict[str, float] | None = None,
                       precision: str | None = None) -> "Verification":
        return dataclasses.replace(self, agreement=agreement, thresholds=thresholds,
                                   precision=precision or self.precision)


@dataclass(frozen=True)
class ExportResult:
    """An exported file: where it is, what it holds and how it was verified (None: not verified).

    ``precision`` is what the file computes in; ``export_info`` the file's ``export`` metadata
    (`metadata.read_export_info`): the choice ``auto`` made, the agreement, the quantization.
    """

    path: Path
    format: str
    metadata: dict[str, Any]
    verification: Verification | None
    precision: str = "fp32"
    export_info: dict[str, Any] | None = None

    @property
    def files(self) -> list[Path]:
        """Every file written: the path, an OpenVINO IR's ``.bin`` beside its ``.xml``, a ``.pte``'s record."""
        if self.format == "openvino":
            return [self.path, self.path.with_suffix(".bin")]
        return [self.path, sidecar_path(self.path)] if self.format == "executorch" else [self.path]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)


@contextlib.contextmanager
def reported_as_not_written(path: str | os.PathLike) -> Iterator[None]:
    """Around an atomic export: a failed verification says that nothing was written to ``path``."""
    try:
        yield
    except ExportVerificationError as e:
        raise ExportVerificationError(f"verification failed: {e}; nothing was written to {path}") from None


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode inside the block and restore its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def random_inputs(resolution: int, batch_sizes: Sequence[int], seed: int = 0) -> list[torch.Tensor]:
    """Standard-normal image batches (N, 3, R, R), one per batch size, reproducible from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 3, resolution, resolution, generator=generator) for n in batch_sizes]


def compare(run: Callable[[torch.Tensor], Any], model: nn.Module, inputs: Sequence[torch.Tensor], what: str) -> float:
    """Largest absolute difference between ``run(x)`` and ``model(x)`` over ``inputs``, in units of the largest
    PyTorch output where that exceeds 1 (float32 rounding grows with the values: a fine-tuned model's logits
    reach tens, an untrained one's stay below 1, where the difference is plainly absolute).

    A model with several outputs (the feature maps of an `AlphaNetFeatures`) is compared output by
    output; ``run`` then returns them in the same order.
    """
    worst = 0.0
    with eval_mode(model), torch.inference_mode():
        for x in inputs:
            expected = model(x)
            several = isinstance(expected, (list, tuple))
            expected = list(expected) if several else [expected]
            got = list(run(x)) if several else [run(x)]
            if len(got) != len(expected):
                raise ExportVerificationError(f"{what} gave {len(got)} outputs, PyTorch {len(expected)}")
            for g, e in zip(got, expected):
                g, e = torch.as_tensor(np.asarray(g)), e.float()
                if g.shape != e.shape:
                    raise ExportVerificationError(f"{what} gave {'an output' if several else 'logits'} of shape "
                                                  f"{list(g.shape)} for a batch of {x.shape[0]}, PyTorch "
                                                  f"{list(e.shape)}")
                diff = (g.float() - e).abs().max().item() / max(1.0, e.abs().max().item())
                if not np.isfinite(diff):
                    raise ExportVerificationError(f"{what} gave non-finite {'outputs' if several else 'logits'}")
                worst = max(worst, diff)
    return worst


def check_diff(diff: float, tolerance: float, what: str, label: str) -> None:
    if diff > tolerance:
        raise ExportVerificationError(f"{what} output of {label} differs from PyTorch by {diff:.3g} "
                                      f"(max abs, per largest logit above 1; tolerance {tolerance:.0e})")


def _run_against(run: Callable[[torch.Tensor], np.ndarray | torch.Tensor], model: nn.Module, *, what: str,
                 label: str, failure: str, batch_sizes: Sequence[int], seed: int, tolerance: float) -> float:
    """Run ``run`` and ``model`` on the same random batches; the largest difference, within ``tolerance``.

    Whatever the runtime raises becomes ``ExportVerificationError("{failure}: ...")``."""
    inputs = random_inputs(model.arch.resolution, batch_sizes, seed)
    try:
        diff = compare(run, model, inputs, what)
    except ExportVerificationError:
        raise
    except Exception as e:
        raise ExportVerificationError(f"{failure}: {brief(e)}") from None
    check_diff(diff, tolerance, what, label)
    return diff




def check_onnx_graph(path: str | os.PathLike, label: str | None = None,
                     expected_outputs: Sequence[str] = (OUTPUT_NAME,)) -> tuple[str, ...]:
    """``onnx.checker`` full check plus the graph's interface and op set; returns what passed."""
    import onnx

    path = Path(path)
    label = label or path.name
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportVerificationError(f"onnx.checker rejected {label}: {brief(e)}") from None
    graph = onnx.load(str(path)).graph
    inputs, outputs = [i.name for i in graph.input], [o.name for o in graph.output]
    if inputs != [INPUT_NAME] or outputs != list(expected_outputs):
        raise ExportVerificationError(f"{label} has inputs {inputs} and outputs {outputs}; "
                                      f"expected [{INPUT_NAME!r}] and {list(expected_outputs)}")
    forbidden = sorted({n.op_type for n in graph.node} & FORBIDDEN_ONNX_OPS)
    if forbidden:
        raise ExportVerificationError(f"{label} holds {', '.join(forbidden)} nodes: an inference graph "
                                      f"should have BatchNorm folded into its convolutions and no dropout")
    return ("onnx.checker full check passed",)


def verify_onnx(path: str | os.PathLike, model: nn.Module, *, batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES,
                tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, label: str | None = None) -> Verification:
    """Check an ONNX file and run it with ONNX Runtime against ``model``; raise on any failure.

    ``label`` names the file in messages (default: its name).
    """
    import onnxruntime as ort

    path = Path(path)
    label = label or path.name
    checks = check_onnx_graph(path, label, output_names(model))
    what = f"onnxruntime {ort.__version__}"
    try:
        runner = OnnxRuntimeModel(path, None, None, None, "cpu")  # ONNX Runtime's default threads
    except ModelOpenError as e:
        raise ExportVerificationError(f"ONNX Runtime cannot load {label}: {e}") from None
    with runner:
        run = runner.run_outputs if len(runner.output_names) > 1 else runner
        diff = _run_against(run, model, what=what, label=label, failure=f"ONNX Runtime failed to run {label}",
                            batch_sizes=batch_sizes, seed=seed, tolerance=tolerance)
    return Verification("onnx", what, tuple(batch_sizes), diff, tolerance, checks)


def verify_torchscript(path: str | os.PathLike, model: nn.Module, *,
                       batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES, tolerance: float = DEFAULT_TOLERANCE,
                       seed: int = 0, label: str | None = None) -> Verification:
    """Load a TorchScript file with ``torch.jit.load`` and run it against ``model``; raise on any failure."""
    path = Path(path)
    label = label or path.name
    try:
        module, metadata = load_torchscript(path, with_metadata=True)
    except Exception as e:  # torch.jit.load raises RuntimeError, ValueError, zip errors... on a bad file
        raise ExportVerificationError(f"torch.jit.load cannot load {label}: {brief(e)}") from None
    if not metadata:
        raise ExportVerificationError(f"{label} holds no metadata (config.json)")
    what = f"torch.jit.load (torch {torch.__version__})"
    runner = TorchScriptModel(path, None, None, None, "cpu", module)  # as open_model runs it
    diff = _run_against(runner, model, what=what, label=label, failure=f"the TorchScript module in {label} failed "
                        "to run", batch_sizes=batch_sizes, seed=seed, tolerance=tolerance)
    return Verification("torchscript", what, tuple(batch_sizes), diff, tolerance,
                        ("config.json metadata present",))


def verify_pt2(path: str | os.PathLike, model: nn.Module, *, batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES,
               tolerance: float = DEFAULT_TOLERANCE, seed: int = 0, label: str | None = None) -> Verification:
    """Load a ``torch.export`` file with ``torch.export.load`` and run it against ``model``; raise on any failure."""
    path = Path(path)
    label = label or path.name
    try:
        program, extra = load_exported_program(path, with_metadata=True)
        module = program.module()
    except Exception as e:  # torch.export.load raises many kinds on a bad archive
        raise ExportVerificationError(f"torch.export.load cannot load {label}: {brief(e)}") from None
    if not extra.get("config.json"):
        raise ExportVerificationError(f"{label} holds no metadata (config.json)")
    what = f"torch.export.load (torch {torch.__version__})"
    runner = Pt2Model(path, None, None, None, "cpu", module)  # as open_model runs it
    diff = _run_against(runner, model, what=what, label=label, failure=f"the ExportedProgram in {label} failed "
                        "to run", batch_sizes=batch_sizes, seed=seed, tolerance=tolerance)
    return Verification("pt2", what, tuple(batch_sizes), diff, tolerance, ("config.json metadata present",))


def verify_openvino(xml: str | os.PathLike, bin_path: str | os.PathLike, model: nn.Module, *,
                    batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES, tolerance: float = DEFAULT_TOLERANCE,
                    seed: int = 0, label: str | None = None, threads: int | None = None) -> Verification:
    """Read an IR with OpenVINO, compile it in f32 with our settings and run it against ``model``."""
    xml = Path(xml)
    label = label or xml.name
    try:
        runner = OpenVinoModel(xml, None, None, threads, "cpu", bin_path=Path(bin_path), inference_precision="f32")
    except ModelOpenError as e:
        raise ExportVerificationError(str(e)) from None
    import openvino

    what = f"openvino {openvino.get_version().split('-')[0]} (f32)"
    try:
        diff = _run_against(lambda x: runner._run_numpy(x.numpy()), model, what=what, label=label,
                            failure=f"OpenVINO failed to run {label}", batch_sizes=batch_sizes, seed=seed,
                            tolerance=tolerance)
    finally:
        runner.close()
    return Verification("openvino", what, tuple(batch_sizes), diff, tolerance, ("OpenVINO read and compiled the IR",))


def verify_runner(runner: Any, model: nn.Module, fmt: str, what: str, *,
                  batch_sizes: Sequence[int] = VERIFY_BATCH_SIZES, tolerance: float = DEFAULT_TOLERANCE, seed: int = 0,
                  label: str | None = None, checks: tuple[str, ...] = ()) -> Verification:
    """Run an opened file (an `ExportedModel` of ``fmt``, run by ``what``) against ``model`` on random batches,
    within ``tolerance``; raise on any failure."""
    label = label or runner.name
    diff = _run_against(runner, model, what=what, label=label, failure=f"{what} failed to run {label}",
                        batch_sizes=batch_sizes, seed=seed, tolerance=tolerance)
    return Verification(fmt, what, tuple(batch_sizes), diff, tolerance, checks)


def reference_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """The fp32 PyTorch model's logits on ``images`` (N, 3, R, R), in eval mode, as float32."""
    param = next(model.parameters())
    outputs = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(param.device, torch.float32)
            outputs.append(model(x).float().cpu().numpy())
    return np.concatenate(outputs)


def file_logits(run: Callable[[np.ndarray], np.ndarray], images: torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """``run``'s logits on ``images`` in batches of ``batch_size`` (numpy in, numpy out)."""
    outputs = []
    for start in range(0, len(images), batch_size):
        outputs.append(np.asarray(run(np.ascontiguousarray(images[start:start + batch_size].numpy())),
                                  dtype=np.float32))
    return np.concatenate(outputs)
