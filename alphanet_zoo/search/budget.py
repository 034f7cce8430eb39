"""What every candidate of a search must satisfy: a FLOPs range and, optionally, a latency cap.

Latency is what a `alphanet_zoo.search.latency.LatencyPredictor` predicts for the subnet on the
chosen runtime (a table lookup: microseconds per call), so checking a budget stays cheap enough
for the random draws and descents of `alphanet_zoo.search.sampling`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ..config import SEARCH_SPACE, ArchConfig, SearchSpace
from ..errors import InputError
from ..flops import count_flops
from .sampling import flops_range, sample_in_range, sample_where

_OUTSIDE = 1e6  # distance of a subnet outside the FLOPs range, in a latency budget


@dataclass(frozen=True)
class Budget:
    """``min_mflops <= MFLOPs <= max_mflops`` and, with a predictor, ``latency(arch) <= max_latency_ms``."""

    min_mflops: float
    max_mflops: float
    max_latency_ms: float | None = None
    latency: Callable[[ArchConfig], float] | None = None

    @classmethod
    def create(cls, max_mflops: float | None = None, min_mflops: float | None = None,
               max_latency_ms: float | None = None, latency: Callable[[ArchConfig], float] | None = None,
               space: SearchSpace = SEARCH_SPACE) -> "Budget":
        """A budget checked against the space: an empty FLOPs range or a latency cap no subnet meets is an error."""
        smallest, largest = flops_range(space)
        low = smallest if min_mflops is None else float(min_mflops)
        high = largest if max_mflops is None else float(max_mflops)
        if high < smallest:
            raise InputError(f"no subnet fits in {high:.2f} MFLOPs: the smallest has {smallest:.2f}")
        if low > high:
            raise InputError(f"the FLOPs floor ({low:.2f}) is above the budget ({high:.2f})")
        if (max_latency_ms is None) != (latency is None):
            raise InputError("a latency cap needs a latency predictor, and a predictor a cap")
        if max_latency_ms is not None:
            fastest = latency(space.smallest())
            if fastest > max_latency_ms:
                raise InputError(f"no subnet fits in {max_latency_ms:g} ms: the smallest is predicted at "
                                 f"{fastest:.2f} ms on this runtime")
        return cls(low, high, None if max_latency_ms is None else float(max_latency_ms), latency)

    def predicted_ms(self, arch: ArchConfig) -> float | None:
        return None if self.latency is None else float(self.latency(arch))

    def distance(self, arch: ArchConfig) -> float:
        """0 inside the budget; otherwise the relative amounts by which it is exceeded, summed.

        Outside the FLOPs range latency is not looked up (a table need only hold the resolutions the
        range allows): such a subnet counts as further away than any latency overrun."""
        f = count_flops(arch)
        gap = max(0.0, self.min_mflops - f) / self.max_mflops + max(0.0, f - self.max_mflops) / self.max_mflops
        if self.latency is not None and self.max_latency_ms is not None:
            if gap > 0:
                return gap + _OUTSIDE
            gap += max(0.0, self.latency(arch) - self.max_latency_ms) / self.max_latency_ms
        return gap

    def fits(self, arch: ArchConfig) -> bool:
        return self.distance(arch) == 0.0

    def sample(self, rng: random.Random, space: SearchSpace = SEARCH_SPACE) -> ArchConfig:
        """A random subnet inside the budget."""
        if self.latency is None:
            return sample_in_range(self.min_mflops, self.max_mflops, rng, space)
        return sample_where(self.distance, rng, space, self.describe())

    def describe(self) -> str:
        text = f"{self.min_mflops:.1f}..{self.max_mflops:.1f} MFLOPs"
        if self.max_latency_ms is not None:
            text += f", at most {self.max_latency_ms:g} ms (predicted)"
        return text
