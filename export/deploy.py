"""The export pipeline every format shares: build, verify, choose a precision, write atomically.

    >>> from alphanet_zoo.export import export_model
    >>> result = export_model(model, "alphanet_a0.xml", "openvino", precision="auto", threads=2)
    >>> result.precision, result.export_info["choice"]["reason"]

1. **Build** each candidate precision in a private staging folder (the system's temporary folder):
   the fp32 ONNX first (every ONNX and OpenVINO file starts from it, so its check covers them),
   then what the format makes of it: its `Builder`, found in `builders.BUILDERS` (this pipeline
   knows no format by name; each format module registers its builder).
2. **Verify.** An fp32 file must match PyTorch to ``tolerance`` (1e-4) on random inputs at two
   batch sizes, after its format's structural checks; any failure stops the export. Every file's
   logits on real images (``--calib-data``, or the built-in test images: `export.images`) are
   compared with the fp32 PyTorch model's (`export.agreement`): a bf16 or int8 file must clear its
   `Thresholds` (bf16: logit cosine >= 0.999 on the worst image; int8: >= 0.99).
3. **Choose** (``precision="auto"``): every candidate that passed is timed on this machine through
   `open_model`'s settings, taking turns (`timing.time_in_turns`), at batch 1 and 16; the fastest
   wins, but a less precise candidate must beat the more precise one by `AUTO_MARGIN` (noise must
   not cost accuracy), and int8 is never chosen when it is slower than bf16. int8 is a candidate
   only with ``--calib-data``: a quantizer calibrated on synthetic images is no deployment choice.
   The figures and the reason go into the file's ``export`` metadata.
4. **Write**: the chosen file, now carrying its ``export`` metadata, is written in staging, run
   once more (its logits must equal the verified candidate's), then copied beside the target under
   temporary names and renamed (`alphanet_zoo._io.atomic_path`; an IR's ``.bin`` then its ``.xml``).
   A failure or an interruption anywhere leaves no file behind, and keeps an earlier file intact.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from alphanet_zoo._version import __version__
from alphanet_zoo._io import atomic_path
from alphanet_zoo.errors import InputError

from .agreement import Thresholds, check_agreement, measure_agreement, thresholds_for
from .builders import BUILDERS, Builder, Candidate, ExportJob, builder_for, formats_offering
from .images import DEFAULT_CALIB_IMAGES, DEFAULT_VERIFY_IMAGES, ImageSets, image_sets
from .metadata import EXPORT_INFO_FORMAT, export_metadata, output_names
from .timing import cpu_name, flat, time_in_turns
from .verify import (DEFAULT_TOLERANCE, ExportResult, ExportVerificationError, Verification, check_diff, compare,
                     file_logits, random_inputs, reference_logits, reported_as_not_written)

log = logging.getLogger("alphanet_zoo")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
RANK = {"fp32": 0, "bf16": 1, "int8": 2}  # most precise first
AUTO_MARGIN = 0.03  # a less precise candidate must be at least 3 % faster to be chosen
TIMING_BATCHES = (1, 16)
TIMING_ROUNDS, TIMING_BLOCK = 6, 3
FINAL_CHECK_ATOL = 1e-5  # the written file against the verified candidate (times the largest logit, at least 1)
FINAL_CHECK_IMAGES = 4


def default_precision(fmt: str) -> str:
    """What an export of ``fmt`` asks for when it names no precision (its builder's ``default_precision``:
    ``auto`` for OpenVINO, the runtime users choose for speed; ``fp32`` for every other format)."""
    return builder_for(fmt).default_precision


def check_precision(builder: Builder, precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "auto" or precision in builder.precisions:
        return
    offering = formats_offering(precision)
    hint = builder.precision_hints.get(precision) or (
        f"{precision} files are made by --format {' or '.join(offering)}" if offering else "")
    raise InputError(f"--precision {precision} is not available for --format {builder.format} "
                     f"(it offers {', '.join(builder.precisions)}{'; ' + hint if hint else ''})")


# ---- measuring --------------------------------------------------------------------------------------

def _time_candidates(job: ExportJob, builder: Builder, candidates: list[Candidate]) -> None:
    """Median ms per image of each candidate at each timing batch size, taking turns (`timing.time_in_turns`),
    through `open_model`'s settings; fills ``candidate.timing`` (``score``: the geometric mean over the
    batch sizes)."""
    side = job.model.arch.resolution
    batches = TIMING_BATCHES if job.batch == "dynamic" else (int(job.batch),)
    generator = torch.Generator().manual_seed(1)
    per_batch: dict[int, list[list[float]]] = {}
    with contextlib.ExitStack() as stack:
        models = [stack.enter_context(builder.open(job, c)) for c in candidates]
        for n in batches:
            x = np.ascontiguousarray(torch.randn(n, 3, side, side, generator=generator).numpy())
            # the first turn's first call compiles for this batch size (OpenVINO): untimed, as its second is
            turns = time_in_turns([lambda m=m: m(x) for m in models], rounds=TIMING_ROUNDS, calls=TIMING_BLOCK,
                                  warmup=1, first_warmup=2)
            per_batch[n] = [[s * 1e3 / n for s in flat(t)] for t in turns]
    for i, c in enumerate(candidates):
        medians = {str(n): round(statistics.median(per_batch[n][i]), 4) for n in batches}
        lows = {str(n): round(min(per_batch[n][i]), 4) for n in batches}
        score = math.exp(sum(math.log(v) for v in medians.values()) / len(medians))
        c.timing = {"ms_per_image": medians, "best_ms_per_image": lows, "score": round(score, 4)}


def _choose(candidates: list[Candidate]) -> tuple[Candidate, str]:
    """The candidate ``auto`` picks among those timed, and why."""
    timed = sorted((c for c in candidates if c.failure is None and c.timing), key=lambda c: RANK[c.precision])
    best = timed[0]
    bf16 = next((b for b in candidates if b.precision == "bf16" and b.timing), None)

    def slower_than_bf16(c: Candidate) -> bool:
        return c.precision == "int8" and bf16 is not None and c.timing["score"] >= bf16.timing["score"]

    for c in timed[1:]:
        if not slower_than_bf16(c) and c.timing["score"] <= best.timing["score"] * (1 - AUTO_MARGIN):
            best = c

    def speed(c: Candidate) -> str:
        return ", ".join(f"{v:.2f}" for v in c.timing["ms_per_image"].values())

    batches = ", ".join(best.timing["ms_per_image"])
    parts = [f"{best.precision} chosen: median ms/image at batch {batches}: {speed(best)}"]
    for c in candidates:
        if c is best:
            continue
        if c.failure is not None:
            parts.append(f"{c.precision} failed: {c.failure}")
        elif c.timing:
            ratio = c.timing["score"] / best.timing["score"]
            why = ("slower than bf16" if slower_than_bf16(c) else "slower" if ratio >= 1
                   else f"less than {100 * AUTO_MARGIN:.0f} % faster")
            parts.append(f"{c.precision} {speed(c)} ({ratio:.2f}x the time; {why})")
    return best, "; ".join(parts)


# ---- the pipeline -----------------------------------------------------------------------------------

def _auto_candidates(builder: Builder, images: ImageSets | None) -> tuple[list[str], list[str]]:
    """The precisions ``auto`` tries here, and a note for each it skips."""
    tried, skipped = [], []
    for precision in builder.precisions:
        why = builder.supported(precision)
        if why is None and precision == "int8" and not (images and images.real):
            why = "needs --calib-data (real images to calibrate on)"
        if why is None:
            tried.append(precision)
        else:
            skipped.append(f"{precision} not tried: {why}")
    return tried, skipped


def _measure(job: ExportJob, builder: Builder, candidate: Candidate, reference: np.ndarray,
             thresholds: Thresholds | None, strict: bool) -> None:
    """The candidate's agreement on the verification images; a reduced precision must clear ``thresholds``
    (``strict``: raise when it does not, else record the failure)."""
    runner = builder.open(job, candidate)
    try:
        candidate.logits = file_logits(runner, job.images.verification)
    finally:
        runner.close()
    candidate.agreement = measure_agreement(reference, candidate.logits, job.images.verification_source)
    if candidate.precision == "fp32":
        candidate.verification = candidate.verification.with_agreement(candidate.agreement.to_dict())
        return
    try:
        check_agreement(candidate.agreement, thresholds, candidate.precision, job.label)
    except ExportVerificationError as e:
        if strict:
            raise
        candidate.failure = str(e).split(": ", 1)[-1]
        return
    base = candidate.verification
    checks = base.checks if base else ()
    runtime = base.runtime if base else builder.format
    candidate.verification = Verification(
        builder.format, runtime, (min(16, len(job.images.verification)),), candidate.agreement.max_abs_diff, None,
        checks, candidate.precision, candidate.agreement.to_dict(), thresholds.to_dict())


def _final_check(job: ExportJob, builder: Builder, chosen: Candidate, files: list[Path], maps: bool = False) -> None:
    """The written file must compute what the verified candidate computed (a features model: the model)."""
    if maps:
        with builder.open(job, chosen, files) as runner:
            diff = compare(runner.run_outputs, job.model, random_inputs(job.model.arch.resolution, (1,)), job.label)
        check_diff(diff, job.tolerance, "ONNX Runtime", job.label)
        return
    runner = builder.open(job, chosen, files)
    try:
        logits = file_logits(runner, job.images.verification[:FINAL_CHECK_IMAGES])
    finally:
        runner.close()
    expected = chosen.logits[:FINAL_CHECK_IMAGES]
    diff = float(np.abs(logits - expected).max())
    # relative to the logits' size: a fine-tuned model's logits reach tens, where float32 rounding of a
    # re-opened file (another thread split of the same sums) is 1e-5 of them
    if not diff <= FINAL_CHECK_ATOL * max(1.0, float(np.abs(expected).max())):
        raise ExportVerificationError(f"the written {job.label} differs from the verified file by {diff:.3g}")


def _export_info(job: ExportJob, builder: Builder, chosen: Candidate, requested: str,
                 candidates: list[Candidate], reason: str | None, thresholds: Thresholds | None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "format": EXPORT_INFO_FORMAT, "file_format": builder.format, "precision": chosen.precision,
        "requested_precision": requested, "verified": job.verify,
        "agreement": chosen.agreement.to_dict() if chosen.agreement else None,
        "thresholds": thresholds.to_dict() if thresholds and chosen.precision != "fp32" else None,
        "verification": dataclasses.asdict(chosen.verification) if chosen.verification else None,
        "quantization": chosen.details.get("quantization"),
        "runtime": chosen.details.get("runtime", {}),
        "graph_passes": chosen.details.get("graph_passes"),
        "choice": None, "library_version": __version__, "torch": torch.__version__,
    }
    if requested == "auto":
        info["choice"] = {
            "reason": reason, "machine": cpu_name(), "threads": job.threads,
            "candidates": [{"precision": c.precision, "passed": c.failure is None, "failure": c.failure,
                            "agreement": c.agreement.to_dict() if c.agreement else None, **(c.timing or {})}
                           for c in candidates]}
    return info


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str, *, precision: str | None = None,
                 metadata: dict[str, Any] | None = None, opset: int | None = None, batch: int | str = "dynamic",
                 verify: bool = True, tolerance: float = DEFAULT_TOLERANCE, min_cosine: float | None = None,
                 min_top1: float | None = None, min_top5: float | None = None,
                 calib_data: str | os.PathLike | None = None, calib_images: int = DEFAULT_CALIB_IMAGES,
                 verify_images: int = DEFAULT_VERIFY_IMAGES, seed: int = 0, threads: int | None = None,
                 progress: Callable[[str], None] | None = None,
                 builder_options: dict[str, Any] | None = None) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) to ``path`` as ``fmt`` (``onnx``, ``openvino``, ``torchscript``,
    ``pt2``) at ``precision`` (``auto``, ``fp32``, ``bf16``, ``int8``; default `default_precision`),
    verified, with its record and ``export`` metadata inside; see the module's docstring.

    ``min_cosine``, ``min_top1``, ``min_top5`` replace the precision's default `Thresholds`;
    ``calib_data`` is a folder of real images (int8 calibration and verification; default: the
    built-in test images verify); ``threads`` the runtime threads the timing of ``auto`` uses
    (None: the runtime's default). ``progress`` receives one line per step. ``opset`` and ``batch`` are
    the ONNX-based formats' (the ONNX builder checks them); ``builder_options`` the format's own.

    An `AlphaNetFeatures` (feature maps, no logits) exports to fp32 ONNX, one output per map
    (`metadata.output_names`), verified map by map against PyTorch on random inputs; there are no
    logits to compare on real images.
    """
    builder = builder_for(fmt)
    requested = precision or default_precision(fmt)
    maps = len(output_names(model)) > 1
    if maps and (not builder.feature_maps or requested != "fp32"):
        offering = [name for name, b in BUILDERS.items() if b.feature_maps]
        raise InputError(f"a feature-map model exports at fp32 to {', '.join(offering)} only, not {requested} "
                         f"{builder.format}")
    check_precision(builder, requested)
    if requested != "auto" and builder.supported(requested):
        raise InputError(f"--precision {requested}: {builder.supported(requested)}")
    if requested == "auto" and not verify:
        raise InputError("--precision auto verifies and times each precision; it cannot be used without "
                         "verification (give --precision)")
    path = Path(path)
    say = progress or (lambda text: log.info("%s", text))
    meta = metadata if metadata is not None else export_metadata(model)
    images = None
    if (verify or requested == "int8") and not maps:
        images = image_sets(model.pretrained_cfg.preprocessing, calib_data, calib_images=calib_images,
                            verify_images=verify_images, seed=seed)
        if requested == "int8" and not images.real:
            log.warning("int8 calibrated on the package's synthetic test images: give --calib-data with real "
                        "images for a file to deploy")
    # the bars a reduced-precision file must clear (auto: every candidate the same, bf16's by default)
    bars = thresholds_for(requested, min_cosine, min_top1, min_top5) if requested != "fp32" else None

    with tempfile.TemporaryDirectory(prefix="alphanet_export_") as staging_dir, reported_as_not_written(path):
        job = ExportJob(model, path, builder.format, meta, Path(staging_dir), opset, batch, tolerance, verify,
                        threads, images, dict(builder_options or {}))
        builder.check(job)
        reference = reference_logits(model, images.verification) if verify and not maps else None
        if requested == "auto":
            wanted, skipped = _auto_candidates(builder, images)
        else:
            wanted, skipped = [requested], []
        candidates: list[Candidate] = []
        for p in wanted:
            say(f"building the {p} candidate")
            try:
                candidate = builder.build(job, p)
            except ExportVerificationError as e:
                if requested != "auto" or p == "fp32":
                    raise
                candidates.append(Candidate(p, [], failure=str(e)))
                continue
            if verify and not maps:
                _measure(job, builder, candidate, reference, bars, strict=requested != "auto")
                if candidate.agreement is not None:
                    say(f"{p}: {candidate.agreement.summary()}"
                        + (f" - FAILED: {candidate.failure}" if candidate.failure else ""))
            candidates.append(candidate)
        reason = None
        if requested == "auto":
            passed = [c for c in candidates if c.failure is None]
            if len(passed) > 1:
                say(f"timing {', '.join(c.precision for c in passed)} on this machine")
                timed = passed + [c for c in candidates if c.precision == "bf16" and c.failure and c.files
                                  and any(p.precision == "int8" for p in passed)]
                _time_candidates(job, builder, timed)
                chosen, reason = _choose(candidates)
            else:
                chosen = passed[0]
                reason = f"{chosen.precision} chosen: the only precision that passed"
                reason += "".join(f"; {c.precision} failed: {c.failure}" for c in candidates if c.failure)
            reason += "".join(f"; {note}" for note in skipped)
        else:
            chosen = candidates[0]
        export_info = _export_info(job, builder, chosen, requested, candidates, reason, bars)
        final_folder = job.staging / "final"
        final_folder.mkdir()
        files = builder.write(job, chosen, export_info, final_folder)
        if verify:
            _final_check(job, builder, chosen, files, maps)
        _install(files, builder.targets(path))
    return ExportResult(path, builder.format, meta, chosen.verification, chosen.precision, export_info)


def _install(files: Sequence[Path], targets: Sequence[Path]) -> None:
    """Copy ``files`` onto ``targets`` atomically: each is copied to a temporary name beside its target,
    then all are renamed, the first target (an IR's ``.xml``, the file users open) last. A failure
    before the renames leaves none of them behind."""
    with contextlib.ExitStack() as stack:  # exits in reverse order: targets[-1] is renamed first
        temporaries = [stack.enter_context(atomic_path(t)) for t in targets]
        for source, tmp in zip(files, temporaries):
            shutil.copyfile(source, tmp)


# ---- one call per format ------------------------------------------------------------------------------

def to_onnx(model: nn.Module, path: str | os.PathLike, *, opset: int | None = None,
            batch: int | str = "dynamic", metadata: dict[str, Any] | None = None, verify: bool = True,
            tolerance: float = DEFAULT_TOLERANCE, precision: str = "fp32", **options: Any) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) to an ONNX file at ``path`` and, by default, verify it.

    fp32 (the default): checked (``onnx.checker`` full check, then ONNX Runtime against ``model``
    at batch sizes other than the traced one, to 1e-4) before it is written under its name; a
    failed check (`ExportVerificationError`) or an interruption leaves nothing behind.
    ``precision="int8"`` or ``"auto"``: see `export_model`, which takes ``options`` (``calib_data``,
    ``min_cosine``, ``threads``...). ``opset`` defaults to `onnx_export.DEFAULT_OPSET`; ``metadata``
    to `export_metadata(model)`.
    """
    return export_model(model, path, "onnx", precision=precision, metadata=metadata, opset=opset, batch=batch,
                        verify=verify, tolerance=tolerance, **options)


def to_torchscript(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None,
                   channels_last: bool = True, verify: bool = True, tolerance: float = DEFAULT_TOLERANCE,
                   **options: Any) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) as a frozen TorchScript file at ``path``; by default verify it.

    Loaded back with ``torch.jit.load`` and run against ``model`` (batches of 1 and 3) before it is
    written under its name: a failed check (`ExportVerificationError`) or an interruption leaves
    nothing behind. ``metadata`` (default `export_metadata(model)`) is stored as the extra file
    ``config.json``: ``torch.jit.load(path, _extra_files={"config.json": ""})``; how the file was
    made as ``export.json``. ``options`` go to `export_model`.

    TorchScript is deprecated upstream (``torch.jit`` warns to move to ``torch.export``); it stays
    for C++ and mobile users who load it today. New deployments: ``--format pt2`` or ``openvino``.
    """
    return export_model(model, path, "torchscript", metadata=metadata, verify=verify, tolerance=tolerance,
                        builder_options={"channels_last": channels_last}, **options)


def to_pt2(model: nn.Module, path: str | os.PathLike, *, metadata: dict[str, Any] | None = None, verify: bool = True,
           tolerance: float = DEFAULT_TOLERANCE, **options: Any) -> ExportResult:
    """Export ``model`` (an `AlphaNet`) as a ``torch.export`` program at ``path`` (``.pt2``); by default verify it.

    Loaded back with ``torch.export.load`` and run against ``model`` (batches of 1 and 3, to
    ``tolerance``) and on real images before it is written under its name: a failed check or an
    interruption leaves nothing behind. ``options`` go to `export_model`.
    """
    return export_model(model, path, "pt2", metadata=metadata, verify=verify, tolerance=tolerance, **options)


__all__ = ["AUTO_MARGIN", "BUILDERS", "Builder", "Candidate", "ExportJob", "PRECISIONS", "builder_for",
           "check_precision", "default_precision", "export_model", "to_onnx", "to_pt2", "to_torchscript"]
