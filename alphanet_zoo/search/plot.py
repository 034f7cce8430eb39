"""``alphanet-search --plot``: top-1 of every evaluated candidate against MFLOPs and, in a latency
search, against predicted latency, with the Pareto front and the reported best (matplotlib, optional)."""
from __future__ import annotations

import os
from typing import Any, Sequence

from .._io import save_figure
from ..flops import count_flops
from .evolution import Candidate, pareto_front


def require_matplotlib() -> None:
    """Raise ImportError with the install hint when matplotlib (the ``plot`` extra) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'alphanet_zoo[plot]'") from None


def plot_points(history: Sequence[Candidate], best: Candidate) -> dict[str, Any]:
    """What `plot_search` draws, per panel (``mflops``, and ``latency`` when candidates have one):
    ``all`` and ``front`` as (x, top-1) points by increasing x, and ``best``."""
    panels: dict[str, Any] = {}
    axes = [("mflops", lambda c: c.mflops)]
    if any(c.latency_ms is not None for c in history):
        axes.insert(0, ("latency", lambda c: c.latency_ms))
    for name, x in axes:
        front = pareto_front(history, x)
        panels[name] = {"all": sorted((x(c), c.top1) for c in history),
                        "front": [(x(c), c.top1) for c in front], "best": (x(best), best.top1)}
    return panels


def plot_search(history: Sequence[Candidate], best: Candidate, path: str | os.PathLike,
                measured_ms: float | None = None, budget_ms: float | None = None) -> dict[str, Any]:
    """Write the plot (PNG, or the format the suffix names) atomically; returns `plot_points`."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    points = plot_points(history, best)
    labels = {"latency": "predicted latency (ms)", "mflops": "MFLOPs"}
    fig, axes = plt.subplots(1, len(points), figsize=(6.5 * len(points), 5), dpi=120, squeeze=False)
    try:
        for ax, (name, p) in zip(axes[0], points.items()):
            ax.scatter([x for x, _ in p["all"]], [y for _, y in p["all"]], s=10, color="tab:gray", alpha=0.5,
                       label=f"evaluated ({len(p['all'])})")
            ax.plot([x for x, _ in p["front"]], [y for _, y in p["front"]], "o-", color="tab:blue", ms=4,
                    label="Pareto front")
            ax.plot(*p["best"], "*", color="tab:red", ms=14, label="best")
            if name == "latency" and budget_ms is not None:
                ax.axvline(budget_ms, color="tab:red", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
            if name == "latency" and measured_ms is not None:
                ax.plot(measured_ms, p["best"][1], "x", color="black", ms=9, label="best, measured end to end")
            ax.set_xlabel(labels[name])
            ax.set_ylabel("top-1 on the held-out images (%)")
            ax.grid(True, alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
        fig.suptitle("alphanet-search: accuracy against cost")
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return points


def plot_front(result, path: str | os.PathLike) -> dict[str, Any]:
    """``--front --plot``: real top-1 of every evaluated candidate and the best per bin against cost,
    and the candidates only predicted (their predicted top-1, hollow). Returns the points drawn."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    evaluated = {c.arch for c in result.history}
    points = {"evaluated": sorted((c.mflops, c.top1) for c in result.history),
              "front": [(c.mflops, c.top1) for c in result.front],
              "predicted": sorted((count_flops(a), p) for a, p in result.pool.items()
                                  if a not in evaluated and p is not None)}
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    try:
        if points["predicted"]:
            ax.scatter(*zip(*points["predicted"]), s=8, facecolors="none", edgecolors="tab:orange", alpha=0.4,
                       label=f"predicted only ({len(points['predicted'])})")
        if points["evaluated"]:
            ax.scatter(*zip(*points["evaluated"]), s=10, color="tab:gray", alpha=0.6,
                       label=f"evaluated ({len(points['evaluated'])})")
        if points["front"]:
            ax.plot(*zip(*points["front"]), "o-", color="tab:blue", ms=4, label="best per bin (real top-1)")
        for i in range(result.bins.count + 1 if result.bins.unit == "MFLOPs" else 0):
            ax.axvline(min(result.bins.low + i * result.bins.step, result.bins.high), color="0.85", lw=0.5)
        ax.set_xlabel("MFLOPs")
        ax.set_ylabel("top-1 on the held-out images (%)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        fig.suptitle("alphanet-search --front")
        fig.tight_layout()
        save_figure(fig, path)
    finally:
        plt.close(fig)
    return points
