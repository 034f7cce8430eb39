"""What an evaluation reports: one result per model, the results JSON, the table, predictions, the plot.

Results JSON (``alphanet-eval --out``, and stdout with ``--json``; format ``alphanet_zoo.eval/2``)::

    {
      "format": "alphanet_zoo.eval/2",
      "partial": false,              # true when interrupted (Ctrl-C): numbers cover what was measured
      "data": "/data/imagenet/val", "layout": "synset_folders" | "ground_truth_file" | "class_folders",
      "ground_truth": null | "/path/LOC_val_solution.csv",   # the file used (flat layout)
      "limit": null | N, "device": "cpu", "tf32": false, "batch_size": 256, "workers": 8,
      "world_size": 1,               # processes the images were split across (torchrun); same numbers for any
      "calibration": null | {"data", "num_batches", "batch_size", "seed", "crop_size", "recipe"},
      "models": [ RESULT, ... ],     # one per evaluated model, in order
      ...RESULT                      # when exactly one model was evaluated, its keys also sit here
    }

RESULT (one model; `model_result`)::

    model (the model's record, `alphanet_zoo.record.ModelRecord`, as config.json holds it; null for
    a file without one), name, backend, weights (the spec loaded), calibrated (bool), partial (bool),
    top1, top5 (percent, null when no image was evaluated), correct1, correct5, images,
    bad_images (count), bad_image_files ([{"path", "reason"}]), top1_vs_paper (top1 minus the
    paper's top-1 for this architecture, or null), mflops_fvcore (fvcore's total, a cross-check of
    the record's mflops), images_per_s (end to end), eval_s (the loop), wall_s (loading,
    calibration and the loop)

``top1``/``top5`` are exact (``100 * correct / images``, not rounded). Predictions
(``--save-predictions``) are JSON lines ``{"model", "path" (relative to the data folder), "target",
"top5"}`` (class indices, best first), one per evaluated image, in order.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from alphanet_zoo._io import atomic_path, save_figure, write_json
from alphanet_zoo.data import EvalResult
from alphanet_zoo.record import ModelRecord, Origin
from alphanet_zoo.registry import MODELS

RESULTS_FORMAT = "alphanet_zoo.eval/2"

__all__ = ["RESULTS_FORMAT", "format_table", "model_result", "plot_pareto", "results_document", "write_json",
           "write_predictions"]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def model_result(*, name: str, record: ModelRecord | None, backend: str, weights: str, result: EvalResult,
                 mflops_fvcore: float | None, wall_s: float) -> dict[str, Any]:
    """The JSON result of one model's evaluation."""
    top1 = result.top1
    paper = record.published.top1 if record is not None and record.published else None
    return {
        "model": record.to_dict() if record is not None else None,
        "name": name, "backend": backend, "weights": weights,
        "calibrated": bool(record is not None and record.calibrated), "partial": bool(result.interrupted),
        "top1": top1, "top5": result.top5, "correct1": result.correct1, "correct5": result.correct5,
        "images": result.images, "bad_images": len(result.bad_images),
        "bad_image_files": [{"path": p, "reason": r} for p, r in result.bad_images],
        "top1_vs_paper": top1 - paper if top1 is not None and paper is not None else None,
        "mflops_fvcore": _round(mflops_fvcore, 2), "images_per_s": _round(result.images_per_s, 2),
        "eval_s": _round(result.seconds, 3), "wall_s": _round(wall_s, 3),
    }


def results_document(results: Sequence[Mapping[str, Any]], run: Mapping[str, Any], partial: bool) -> dict[str, Any]:
    """The whole results JSON: run settings, ``models``, and the single model's keys at the top."""
    doc: dict[str, Any] = {"format": RESULTS_FORMAT, "partial": bool(partial), **run, "models": list(results)}
    if len(results) == 1:
        for key, value in results[0].items():
            doc.setdefault(key, value)
    return doc


def write_predictions(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line (``model``, ``path``, ``target``, ``top5``), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _facts(r: Mapping[str, Any]) -> tuple[Any, Any, Any, Any]:
    """(paper top-1, paper MFLOPs, counted MFLOPs, params) of a result, from its model record."""
    m = r.get("model") or {}
    published = m.get("published") or {}
    return published.get("top1"), published.get("mflops"), m.get("mflops"), m.get("params")


def format_table(results: Sequence[Mapping[str, Any]], partial: bool = False) -> str:
    """The printed results table: measured beside the paper's numbers ('-': not published or not known)."""
    header = (f"{'model':<12}{'images':>8}{'top-1':>8}{'paper':>8}{'diff':>8}{'top-5':>8}"
              f"{'MFLOPs':>9}{'paper':>7}{'fvcore':>9}{'params':>12}{'img/s':>9}{'wall s':>9}")
    lines = [header, "-" * len(header)]
    for r in results:
        paper_top1, paper_mflops, mflops, params = _facts(r)
        diff = r["top1_vs_paper"]
        lines.append(
            f"{r['name'] + ('*' if r['partial'] else ''):<12}{r['images']:>8}{_fmt(r['top1'], '.2f'):>8}"
            f"{_fmt(paper_top1, '.2f'):>8}{'-' if diff is None else format(diff, '+.2f'):>8}"
            f"{_fmt(r['top5'], '.2f'):>8}{_fmt(mflops, '.2f'):>9}{_fmt(paper_mflops, '.0f'):>7}"
            f"{_fmt(r['mflops_fvcore'], '.2f'):>9}{_fmt(params, ',d'):>12}{_fmt(r['images_per_s'], '.1f'):>9}"
            f"{_fmt(r['wall_s'], '.1f'):>9}")
    notes = []
    if any(r["bad_images"] for r in results):
        notes.append("skipped unreadable images: " + ", ".join(f"{r['name']} {r['bad_images']}"
                                                              for r in results if r["bad_images"]))
    if partial:
        notes.append("* interrupted: numbers cover the images evaluated before Ctrl-C")
    if any(not r["calibrated"] and (r.get("model") or {}).get("origin") == Origin.EXTRACTED for r in results):
        notes.append("BatchNorm of the subnets extracted here was not calibrated: give --calib-data TRAIN_DIR "
                     "to measure what the architecture reaches")
    notes.append("top-1/top-5 in %; paper = published for the architecture (the paper gives no top-5); MFLOPs "
                 "in the paper's convention (conv and linear multiply-adds), fvcore = fvcore's total")
    return "\n".join(lines + notes)


def plot_points(results: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float, str]]]:
    """The points `plot_pareto` draws: ``paper`` (every published model) and ``measured`` (the results
    with a top-1), each ``(MFLOPs, top-1, name)`` in increasing MFLOPs."""
    paper = sorted((float(m.published_mflops), m.published_top1, name) for name, m in MODELS.items())
    measured = sorted((float(_facts(r)[2]), float(r["top1"]), r["name"]) for r in results
                      if r["top1"] is not None and _facts(r)[2] is not None)
    return {"paper": paper, "measured": measured}


def require_matplotlib() -> None:
    """Raise ImportError with the install hint when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'alphanet_zoo[plot]'") from None


def plot_pareto(results: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> dict:
    """Top-1 against MFLOPs: the evaluated models beside the paper's points, written atomically (PNG).

    Returns the points drawn (`plot_points`).
    """
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points = plot_points(results)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
    try:
        for key, style, colour, label, offset in (("paper", "o--", "tab:gray", "paper (AlphaNet)", (4, -10)),
                                                  ("measured", "s-", "tab:blue", "measured (alphanet-eval)", (4, 4))):
            pts = points[key]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour, label=label)
            for x, y, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=offset, fontsize=7, color=colour)
        ax.set_xlabel("MFLOPs")
        ax.set_ylabel("ImageNet top-1 (%)")
        ax.set_title("AlphaNet: top-1 against MFLOPs")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return points
