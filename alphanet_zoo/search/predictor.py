"""Accuracy predictor for search: top-1 of a subnet estimated from its architecture, in microseconds.

    from alphanet_zoo.search.predictor import AccuracyPredictor
    predictor = AccuracyPredictor.fit(archs, top1s)          # evaluated candidates (a history file)
    predictor.predict([arch])                                 # [71.3]
    predictor.loo_rmse                                        # its leave-one-out error, in top-1 points

The model is **ridge regression** on a fixed encoding of the architecture (`encode`): for every
choice of the search space with more than one option (resolution; per-stage width; per-MB-stage
depth, kernel and expand ratio) the option's position in its list scaled to [0, 1], plus the
subnet's MFLOPs (the paper's count) and its square, standardised; the regularisation strength
is chosen by exact leave-one-out error over a fixed grid (closed form through one SVD).

Why ridge rather than the MLP once-for-all ships or AttentiveNAS's fitted predictors: a search
refits its predictor every generation on what it has evaluated, which early on is a few dozen
candidates. A linear model with ~35 inputs and a shrinkage chosen by leave-one-out is well posed
at that size, fits in milliseconds with no training loop, learning rate, epochs or seed, and gives
its own error estimate (the leave-one-out RMSE) that the search uses as a margin. Its fit is one
float64 SVD run on one thread, so every process of a ``torchrun`` search computes bit-identical
predictions and takes identical decisions. An MLP pays off with thousands of evaluated subnets
(once-for-all fits on 16 000); a search of a few hundred evaluations does not have them.

A predictor refitted during a search may pool an earlier run's history with this run's
evaluations (``--predictor FILE``): a 0/1 feature marks this run's rows, so a shift between the
two (another held-out subset, another checkpoint) is learned as an offset rather than as noise.

`kendall_tau` (tau-b) measures how well predictions rank candidates.
"""
from __future__ import annotations

import functools
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .sampling import _get, genes

#: ridge strengths tried (on standardised features), the best by leave-one-out error kept
ALPHAS = tuple(10.0 ** (k / 2) for k in range(-6, 9))
MIN_ROWS = 4  # fewer evaluated candidates than this: no fit
TAU_ROWS = 500  # loo_tau is measured on the last rows fitted on (the newest), at most this many


def encode(arch: ArchConfig, space: SearchSpace = SEARCH_SPACE) -> list[float]:
    """The architecture as numbers: each multi-option choice's position in its options, in [0, 1]
    (resolution, width per stage, then depth, kernel and expand ratio per MB stage), then MFLOPs/1000
    and its square."""
    return list(_encoded(arch, space))


@functools.lru_cache(maxsize=1 << 16)
def _encoded(arch: ArchConfig, space: SearchSpace) -> tuple[float, ...]:
    values = []
    for gene, options in genes(space):
        value = _get(arch, gene)
        ordered = sorted(options)
        position = ordered.index(value) if value in ordered else min(range(len(ordered)),
                                                                      key=lambda i: abs(ordered[i] - value))
        values.append(position / (len(ordered) - 1))
    f = count_flops(arch) / 1000.0
    return tuple(values + [f, f * f])


def encode_onehot(arch: ArchConfig, space: SearchSpace = SEARCH_SPACE) -> list[float]:
    """The architecture as indicators: one 0/1 per option of every multi-option choice (a choice's
    options need not act in order: a middle expand ratio may be the best), then MFLOPs/1000, its
    square and its log. Fit on a few hundred noisy evaluations of the AttentiveNAS accuracy
    surrogate this encoding ranks subnets of one FLOPs band far better than `encode` (correlation
    0.92 against 0.80 with the surrogate's noise-free top-1)."""
    return list(_onehot(arch, space))


@functools.lru_cache(maxsize=1 << 16)
def _onehot(arch: ArchConfig, space: SearchSpace) -> tuple[float, ...]:
    values = [1.0 if _get(arch, gene) == o else 0.0 for gene, options in genes(space) for o in options]
    f = count_flops(arch) / 1000.0
    return tuple(values + [f, f * f, math.log(f)])


ENCODINGS = {"ordinal": encode, "onehot": encode_onehot}


@contextmanager
def _one_thread() -> Iterator[None]:
    """Linear algebra on one thread: the same numbers on every process, whatever its thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class AccuracyPredictor:
    """Ridge regression of top-1 on `encode` (see the module docstring). Build with `fit`."""

    mean: list[float]  # feature means and scales (standardisation), last entry: the "this run" flag
    scale: list[float]
    weights: list[float]
    bias: float
    alpha: float
    loo_rmse: float
    rows: int
    space: SearchSpace = SEARCH_SPACE
    #: per row fitted on: real top-1 minus the prediction of the fit without that row (exact leave-one-out)
    loo_residuals: tuple[float, ...] = ()
    #: Kendall tau between those leave-one-out predictions and the real top-1 (the last TAU_ROWS rows): the
    #: skill shown on held-out rows
    loo_tau: float | None = None
    encoding: str = "ordinal"  # a key of ENCODINGS

    @classmethod
    def fit(cls, archs: Sequence[ArchConfig], top1: Sequence[float], *, current: Sequence[bool] | None = None,
            space: SearchSpace = SEARCH_SPACE, encoding: str = "ordinal") -> "AccuracyPredictor":
        """Fit on evaluated candidates. ``current`` marks the rows of the running search (others: an
        earlier run's); predictions are for the running search. ``encoding``: ``"ordinal"`` (`encode`) or
        ``"onehot"`` (`encode_onehot`)."""
        if encoding not in ENCODINGS:
            raise InputError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        encoder = ENCODINGS[encoding]
        if len(archs) != len(top1):
            raise InputError(f"{len(archs)} architectures but {len(top1)} accuracies")
        if len(archs) < MIN_ROWS:
            raise InputError(f"an accuracy predictor needs at least {MIN_ROWS} evaluated candidates, got {len(archs)}")
        flags = [1.0] * len(archs) if current is None else [1.0 if c else 0.0 for c in current]
        with _one_thread():
            x = torch.tensor([encoder(a, space) + [f] for a, f in zip(archs, flags)], dtype=torch.float64)
            y = torch.tensor([float(v) for v in top1], dtype=torch.float64)
            mean = x.mean(0)
            scale = x.std(0, unbiased=False)
            scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
            z = (x - mean) / scale
            y_mean = y.mean()
            u, s, vh = torch.linalg.svd(z, full_matrices=False)
            uty = u.T @ (y - y_mean)
            best = None
            for alpha in ALPHAS:
                shrink = s * s / (s * s + alpha)
                fitted = u @ (shrink * uty)
                # the mean is fitted too: leverage gains 1/n
                leverage = (u * u) @ shrink + 1.0 / len(archs)
                residual = (y - y_mean - fitted) / (1.0 - leverage).clamp_min(1e-9)
                rmse = float(residual.square().mean().sqrt())
                if best is None or rmse < best[0] - 1e-12:
                    best = (rmse, alpha)
            rmse, alpha = best
            w = vh.T @ ((s / (s * s + alpha)) * uty)
            shrink = s * s / (s * s + alpha)
            leverage = (u * u) @ shrink + 1.0 / len(archs)
            residual = (y - y_mean - u @ (shrink * uty)) / (1.0 - leverage).clamp_min(1e-9)
            tau = kendall_tau((y - residual)[-TAU_ROWS:], y[-TAU_ROWS:])
        return cls([float(v) for v in mean], [float(v) for v in scale], [float(v) for v in w], float(y_mean),
                   alpha, rmse, len(archs), space, tuple(round(float(v), 9) for v in residual), tau, encoding)

    def predict(self, archs: Iterable[ArchConfig]) -> list[float]:
        """Predicted top-1 % of each architecture (for the running search), rounded to 1e-6."""
        archs = list(archs)
        if not archs:
            return []
        with _one_thread():
            encoder = ENCODINGS[self.encoding]
            x = torch.tensor([encoder(a, self.space) + [1.0] for a in archs], dtype=torch.float64)
            z = (x - torch.tensor(self.mean, dtype=torch.float64)) / torch.tensor(self.scale, dtype=torch.float64)
            out = z @ torch.tensor(self.weights, dtype=torch.float64) + self.bias
        return [round(float(v), 6) for v in out]

    def to_dict(self) -> dict:
        return {"format": "alphanet_zoo.predictor/1", "model": "ridge",
                "features": "encode" if self.encoding == "ordinal" else "encode_onehot", "alpha": self.alpha,
                "loo_rmse": round(self.loo_rmse, 6), "rows": self.rows,
                "loo_tau": None if self.loo_tau is None else round(self.loo_tau, 6),
                "mean": self.mean, "scale": self.scale,
                "weights": self.weights, "bias": self.bias}


def kendall_tau(x: "Sequence[float] | torch.Tensor", y: "Sequence[float] | torch.Tensor") -> float | None:
    """Kendall's tau-b between two sequences or 1-D tensors (ties counted as in scipy's default); None
    below two pairs. Vectorised over all pairs (float64), for the hundreds of rows a search has."""
    if len(x) != len(y):
        raise ValueError("kendall_tau: sequences differ in length")
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    sx = torch.sign(x[:, None] - x[None, :]).triu(1)
    sy = torch.sign(y[:, None] - y[None, :]).triu(1)
    both = (sx != 0) & (sy != 0)
    product = (sx * sy)[both]
    concordant, discordant = int((product > 0).sum()), int((product < 0).sum())
    ties_x = int(((sx == 0) & (sy != 0)).triu(1).sum())
    ties_y = int(((sy == 0) & (sx != 0)).triu(1).sum())
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return None if denominator == 0 else (concordant - discordant) / denominator


def tau_is_significant(tau: float | None, n: int, z: float = 3.0) -> bool:
    """Whether Kendall's ``tau`` over ``n`` pairs is ``z`` standard errors above 0, the standard error being
    that of tau between independent rankings, sqrt(2(2n+5) / (9n(n-1))): a predictor with no skill passes
    with a probability of about 0.1 % at z = 3 (2 % at z = 2)."""
    if tau is None or n < 3:
        return False
    return tau >= z * math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))


def read_evaluations(path: str | os.PathLike) -> list[tuple[ArchConfig, float]]:
    """(architecture, real top-1) pairs from an earlier run: a search history (JSON lines, ``alphanet-search
    --history``, ours or any run's rows with ``arch`` and ``top1``) or a JSON list of such rows. Rows
    without a real top-1 (``top1`` null, or marked ``"predicted": true``) are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--predictor: no file at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        document = json.loads(text)
        rows = document if isinstance(document, list) else [document]
    except json.JSONDecodeError:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise InputError(f"{path}, line {number}: not JSON ({e.msg})") from None
    out: dict[ArchConfig, float] = {}
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or row.get("predicted") or row.get("top1") is None:
            continue
        try:
            out[ArchConfig.from_dict(row["arch"]).validate()] = float(row["top1"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{path}, row {number}: not an evaluated candidate ({e})") from None
    if not out:
        raise InputError(f"--predictor: {path} holds no evaluated candidates (rows with 'arch' and 'top1')")
    return list(out.items())
