"""Moved to `alphanet_zoo.train.losses` (the training losses; only training uses it).

This old import path still works: it is that very module."""
import sys

from .train import losses as _moved

sys.modules[__name__] = _moved
