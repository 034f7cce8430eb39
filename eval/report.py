"""What an evaluation reports: the per-model record, the results JSON, the table, predictions, the plot.

Results JSON (``alphanet-eval --output``; format ``alphanet_zoo.eval/1``)::

    {
      "format": "alphanet_zoo.eval/1",
      "partial": false,              # true when interrupted (Ctrl-C): numbers cover what was measured
      "data": "/data/imagenet/val", "layout": "synset_folders" | "ground_truth_file",
      "ground_truth": null | "/path/LOC_val_solution.csv",   # the file used (flat layout)
      "limit": null | N,
      "device": "cpu", "tf32": false, "batch_size": 256, "workers": 8,
      "calibration": null | {"data": "/data/imagenet/train", "batches": 64, "batch_size": 256, "seed": 0},
      "models": [ RECORD, ... ],     # one per evaluated model, in order
      ...RECORD                      # when exactly one model was evaluated, its keys also sit here
    }

RECORD (one model; `model_record`)::

    name, arch (ArchConfig dict or null), backend ("pytorch" | "onnxruntime"), weights (what was loaded),
    calibrated (bool), partial (bool),
    top1, top5 (percent, null when no image was evaluated), correct1, correct5, images,
    bad_images (count), bad_image_files ([{"path", "reason"}]),
    mflops (paper convention, counted), mflops_fvcore (fvcore total), params (live parameters),
    images_per_s (end to end, data loading included), eval_s (the loop), wall_s (loading,
    calibration and the loop),
    published_top1, published_top5 (null: not published), published_mflops (null for a model
    outside the paper's table), top1_diff (top1 - published_top1), mflops_diff (mflops - published_mflops)

``top1``/``top5`` are exact (``100 * correct / images``, not rounded). Predictions
(``--save-predictions``) are JSON lines ``{"model", "path" (relative to the data folder), "target",
"top5"}`` (class indices in the canonical order, best first), one per evaluated image, in order.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from alphanet_zoo._io import atomic_path
from alphanet_zoo.registry import MODELS

RESULTS_FORMAT = "alphanet_zoo.eval/1"


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def model_record(*, name: str, arch: Mapping | None, backend: str, weights: str, calibrated: bool, result,
                 mflops: float | None, mflops_fvcore: float | None, params: int | None, wall_s: float,
                 published_top1: float | None, published_top5: float | None,
                 published_mflops: float | None) -> dict[str, Any]:
    """The JSON record of one model's evaluation (``result`` is an `EvalResult`)."""
    top1 = result.top1
    return {
        "name": name, "arch": dict(arch) if arch is not None else None, "backend": backend, "weights": weights,
        "calibrated": calibrated, "partial": bool(result.interrupted),
        "top1": top1, "top5": result.top5,
        "correct1": result.correct1, "correct5": result.correct5, "images": result.images,
        "bad_images": len(result.bad_images),
        "bad_image_files": [{"path": p, "reason": r} for p, r in result.bad_images],
        "mflops": _round(mflops, 2), "mflops_fvcore": _round(mflops_fvcore, 2), "params": params,
        "images_per_s": _round(result.images_per_s, 2), "eval_s": _round(result.seconds, 3),
        "wall_s": _round(wall_s, 3),
        "published_top1": published_top1, "published_top5": published_top5, "published_mflops": published_mflops,
        "top1_diff": top1 - published_top1 if top1 is not None and published_top1 is not None else None,
        "mflops_diff": _round(mflops - published_mflops, 2)
        if mflops is not None and published_mflops is not None else None,
    }


def results_document(records: Sequence[Mapping[str, Any]], run: Mapping[str, Any], partial: bool) -> dict[str, Any]:
    """The whole results JSON: run settings, ``models``, and the single model's keys at the top."""
    doc: dict[str, Any] = {"format": RESULTS_FORMAT, "partial": bool(partial), **run, "models": list(records)}
    if len(records) == 1:
        for key, value in records[0].items():
            doc.setdefault(key, value)
    return doc


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def write_predictions(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line (``model``, ``path``, ``target``, ``top5``), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_table(records: Sequence[Mapping[str, Any]], partial: bool = False) -> str:
    """The printed results table: measured beside published, per model ('-': not published / not known)."""
    header = (f"{'model':<12}{'images':>8}{'top-1':>8}{'paper':>8}{'diff':>8}{'top-5':>8}{'paper':>7}"
              f"{'MFLOPs':>9}{'paper':>7}{'fvcore':>9}{'params':>12}{'img/s':>9}{'wall s':>9}")
    lines = [header, "-" * len(header)]
    for r in records:
        diff = r["top1_diff"]
        lines.append(
            f"{r['name'] + ('*' if r['partial'] else ''):<12}{r['images']:>8}{_fmt(r['top1'], '.2f'):>8}"
            f"{_fmt(r['published_top1'], '.2f'):>8}{'-' if diff is None else format(diff, '+.2f'):>8}"
            f"{_fmt(r['top5'], '.2f'):>8}{_fmt(r['published_top5'], '.2f'):>7}"
            f"{_fmt(r['mflops'], '.2f'):>9}{_fmt(r['published_mflops'], 'd'):>7}{_fmt(r['mflops_fvcore'], '.2f'):>9}"
            f"{_fmt(r['params'], ',d'):>12}{_fmt(r['images_per_s'], '.1f'):>9}{_fmt(r['wall_s'], '.1f'):>9}")
    notes = []
    if any(r["bad_images"] for r in records):
        notes.append("skipped unreadable images: " + ", ".join(f"{r['name']} {r['bad_images']}"
                                                              for r in records if r["bad_images"]))
    if partial:
        notes.append("* interrupted: numbers cover the images evaluated before Ctrl-C")
    notes.append("top-1/top-5 in %, paper = published (the paper gives no top-5); MFLOPs in the paper's "
                 "convention (conv and linear multiply-adds), fvcore = fvcore's total")
    return "\n".join(lines + notes)


def require_matplotlib() -> None:
    """Raise ImportError with the install hint when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'alphanet_zoo[plot]'") from None


def plot_pareto(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Top-1 against MFLOPs: the evaluated models beside the paper's points, written atomically (PNG)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    try:
        paper = sorted((m.published_mflops, m.published_top1, name) for name, m in MODELS.items())
        ax.plot([p[0] for p in paper], [p[1] for p in paper], "o--", color="tab:gray", label="paper (AlphaNet)")
        for x, y, name in paper:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7, color="tab:gray")
        measured = [(r["mflops"], r["top1"], r["name"]) for r in records
                    if r["top1"] is not None and r["mflops"] is not None]
        if measured:
            measured.sort()
            ax.plot([m[0] for m in measured], [m[1] for m in measured], "s-", color="tab:blue",
                    label="measured (alphanet-eval)")
            for x, y, name in measured:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color="tab:blue")
        ax.set_xlabel("MFLOPs")
        ax.set_ylabel("ImageNet top-1 (%)")
        ax.set_title("AlphaNet: top-1 against MFLOPs")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or "png")
    finally:
        plt.close(fig)
