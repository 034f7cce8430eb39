"""Moved to `alphanet_zoo.train.peer_watch` (the lost-process watch of training; only training uses it).

This old import path still works: it is that very module."""
import sys

from .train import peer_watch as _moved

sys.modules[__name__] = _moved
