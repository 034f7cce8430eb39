"""The AttentiveNAS authors' accuracy predictor as a surrogate oracle for comparing search methods.

The AttentiveNAS authors published a random forest (scikit-learn, 100 trees) fit on real ImageNet
evaluations of subnets of the search space AlphaNet uses; its 31 inputs are the resolution, then
the 9 widths, 7 depths, 7 kernel sizes and 7 expand ratios. ``tools/convert_acc_predictor.py``
turned their ``acc_predictor.joblib`` into plain arrays (``resources/attentivenas_acc_predictor.safetensors``,
with the source file's sha256), which `AccuracySurrogate` walks with numpy: no pickle is loaded and
scikit-learn is not needed. Its scale is the authors' supernet before fine-tuning (a0: 67.5), not
the paper's table.

`SurrogateEvaluator` makes the forest an evaluator a search can call: an evaluation is the
surrogate's top-1 measured on ``images`` simulated held-out images (a binomial draw; 0: the
surrogate's value itself). The draw depends only on the seed and the architecture, as a real
evaluation on a fixed held-out set depends only on the subnet: evaluating a subnet twice gives the
same top-1. Surrogate benchmarks of NAS (NAS-Bench-301) compare search methods the same way.
The forest and its arrays are the AttentiveNAS authors' work, CC-BY-NC 4.0.
"""
from __future__ import annotations

import functools
import time
from importlib import resources
from typing import Sequence

import numpy as np

from ..config import ArchConfig
from ..errors import InputError
from .evolution import Evaluation

RESOURCE = "attentivenas_acc_predictor.safetensors"
SOURCE_SHA256 = "0dd6126f8f96743a9fcceea1fd77d730995b157f1192329447b2312a10563319"
DEFAULT_IMAGES = 50_000  # ImageNet's validation set


def features(archs: Sequence[ArchConfig]) -> np.ndarray:
    """The forest's inputs, one row per subnet: resolution, width (9), depth (7), kernel_size (7),
    expand_ratio (7), as float32 (scikit-learn compares float32 inputs with float64 thresholds)."""
    rows = [[a.resolution, *a.width, *a.depth, *a.kernel_size, *a.expand_ratio] for a in archs]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), 31)


class AccuracySurrogate:
    """A random forest as flat arrays (``feature``, ``threshold``, ``left``, ``right``, ``value`` per node,
    ``roots`` per tree); `predict` is the mean of the trees' leaves."""

    def __init__(self, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
        self.feature = arrays["feature"].astype(np.int64)
        self.threshold = arrays["threshold"].astype(np.float64)
        self.left = arrays["left"].astype(np.int64)
        self.right = arrays["right"].astype(np.int64)
        self.value = arrays["value"].astype(np.float64)
        self.roots = arrays["roots"].astype(np.int64)
        self.metadata = dict(metadata or {})
        self._leaf = self.left < 0
        self._feature = np.where(self._leaf, 0, self.feature)

    @classmethod
    def load(cls, path: str | None = None) -> "AccuracySurrogate":
        """The shipped forest (or the arrays at ``path``), checked against the source file's sha256."""
        from safetensors import safe_open

        source = path or resources.files("alphanet_zoo") / "resources" / RESOURCE
        with safe_open(str(source), framework="numpy") as f:
            metadata = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        if path is None and metadata.get("source_sha256") != SOURCE_SHA256:
            raise InputError(f"{source}: not the converted AttentiveNAS predictor (source sha256 "
                             f"{metadata.get('source_sha256')!r}, expected {SOURCE_SHA256})")
        return cls(arrays, metadata)

    @property
    def trees(self) -> int:
        return len(self.roots)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Predicted top-1 (%) for rows of `features`."""
        x = np.asarray(x, dtype=np.float32)
        node = np.broadcast_to(self.roots, (x.shape[0], self.trees)).copy()
        rows = np.arange(x.shape[0])[:, None]
        while True:
            active = ~self._leaf[node]
            if not active.any():
                break
            go_left = x[rows, self._feature[node]].astype(np.float64) <= self.threshold[node]
            node = np.where(active, np.where(go_left, self.left[node], self.right[node]), node)
        return self.value[node].mean(axis=1)

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """Noise-free surrogate top-1 (%) of each subnet."""
        if not archs:
            return np.zeros(0)
        return self.predict_features(features(archs))


@functools.lru_cache(maxsize=1)
def shipped_surrogate() -> AccuracySurrogate:
    """The AttentiveNAS predictor shipped with the package (loaded once)."""
    return AccuracySurrogate.load()


class SurrogateEvaluator:
    """``evaluate_many(archs) -> [Evaluation]`` on the surrogate: top-1 on ``images`` simulated held-out
    images (0: noise-free), the draw a function of ``seed`` and the architecture only. ``calls`` counts
    the subnets evaluated."""

    def __init__(self, images: int = DEFAULT_IMAGES, seed: int = 0, surrogate: AccuracySurrogate | None = None):
        if images < 0:
            raise InputError(f"--surrogate-images must be >= 0, got {images}")
        self.images, self.seed = int(images), int(seed)
        self.surrogate = surrogate or shipped_surrogate()
        self.calls = 0

    def describe(self) -> dict:
        return {"evaluator": "surrogate", "model": "AttentiveNAS acc_predictor (random forest, 100 trees)",
                "source_sha256": self.surrogate.metadata.get("source_sha256"), "images": self.images,
                "noise": "none" if self.images == 0 else f"binomial top-1 on {self.images} simulated images",
                "seed": self.seed}

    def top1(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        """What evaluating each subnet gives (without counting a call)."""
        x = features(archs)
        clean = self.surrogate.predict_features(x)
        if self.images == 0:
            return clean
        out = np.empty(len(archs))
        for i, (row, p) in enumerate(zip(x.astype(np.int64), clean)):
            rng = np.random.default_rng([self.seed, *row.tolist()])
            out[i] = 100.0 * rng.binomial(self.images, min(max(p / 100.0, 0.0), 1.0)) / self.images
        return out

    def __call__(self, archs: Sequence[ArchConfig]) -> list[Evaluation]:
        start = time.perf_counter()
        values = self.top1(archs)
        self.calls += len(archs)
        seconds = (time.perf_counter() - start) / max(1, len(archs))
        return [Evaluation(float(v), 0, seconds, 1) for v in values]
