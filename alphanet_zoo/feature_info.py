"""Where AlphaNet's feature maps are tapped, and `FeatureInfo`, their description in timm's vocabulary.

A tap is the output of the last MB stage at each resolution, as timm taps MobileNetV3 and
EfficientNet (the last block of each stride):

| index | after | stride |
| --- | --- | --- |
| 0 | mb1 (``stages.0``) | 2 |
| 1 | mb2 (``stages.1``) | 4 |
| 2 | mb3 (``stages.2``) | 8 |
| 3 | mb5 (``stages.4``) | 16 |
| 4 | mb7 (``stages.6``) | 32 |

This module needs no timm: `FeatureInfo` answers ``channels()``, ``reduction()`` and
``module_name()`` as timm's class of that name does.
"""
from __future__ import annotations

import itertools
import operator
from typing import Any, Sequence

from .errors import InputError
from .layout import NetLayout

#: How many MB stages have run at each tap (index 0 is after the first stage).
TAP_STAGES = (1, 2, 3, 5, 7)
#: The taps `features_only` models return by default: strides 4, 8, 16 and 32, the maps detection
#: and segmentation necks take (FPN's C2..C5). `AlphaNet.forward_intermediates` returns every tap by
#: default, as timm's does; timm's MobileNetV3 and EfficientNet return all five with features_only
#: too. Ours leave out the stride-2 map (16 to 24 channels at half the input side, the largest map and
#: the one a neck does not use) and have done so since features_only was added: changing the default
#: would change what earlier calls return. ``out_indices=None`` (or ``(0, 1, 2, 3, 4)``) gives all five.
DEFAULT_OUT_INDICES = (1, 2, 3, 4)


def feature_dicts(layout: NetLayout) -> list[dict[str, Any]]:
    """One dict per tap, as timm models keep them: ``num_chs``, ``reduction``, ``module``, ``stage``."""
    # the stride after each stage: the stem halves the input, then each stage's first block strides
    strides = list(itertools.accumulate((blocks[0].stride for blocks in layout.stages), operator.mul, initial=2))
    return [{"num_chs": layout.stages[t - 1][-1].out_channels, "reduction": strides[t], "module": f"stages.{t - 1}",
             "stage": t} for t in TAP_STAGES]


def take_indices(count: int, indices: int | Sequence[int] | None) -> tuple[list[int], int]:
    """The taps to return (of ``count``) and the last one of them, in timm's convention.

    None: all of them; an int n: the last n; a sequence: those indices (negative ones count
    from the end).
    """
    if indices is None:
        indices = count
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 0 < indices <= count:
            raise InputError(f"cannot take the last {indices} of {count} feature maps")
        taken = list(range(count - indices, count))
    else:
        taken = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count:
                raise InputError(f"feature index {i!r} is out of range: there are {count} feature maps "
                                 f"(0 to {count - 1})")
            taken.append(i % count)
        if not taken:
            raise InputError("no feature maps chosen: indices is empty")
    return taken, max(taken)


class FeatureInfo:
    """The taps a features model returns: channels, stride (``reduction``) and module name of each."""

    def __init__(self, dicts: Sequence[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(d) for d in dicts]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """``key`` of every returned tap (a list), or of the ``idx``-th one (a value) or ones (a list)."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, int):
            return self.info[idx][key]
        return [self.info[i][key] for i in idx]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None) -> Any:
        """The dicts of the returned taps (or of ``idx``), limited to ``keys``."""
        chosen = self.out_indices if idx is None else ([idx] if isinstance(idx, int) else idx)
        dicts = [{k: v for k, v in self.info[i].items() if keys is None or k in keys} for i in chosen]
        return dicts[0] if isinstance(idx, int) else dicts

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return (f"FeatureInfo(channels={self.channels()}, reduction={self.reduction()}, "
                f"out_indices={list(self.out_indices)})")
