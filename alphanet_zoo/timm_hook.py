"""Registering the published models with timm without importing timm (about 3 s) in every process.

`import alphanet_zoo` calls `register_when_timm_loads`: when timm is already imported the models
are registered at once (`alphanet_zoo.timm_models`); when timm is installed but not yet imported, a
finder on ``sys.meta_path`` waits for the first ``import timm`` and registers them right after timm
has loaded, so ``timm.create_model("alphanet_a0")`` works in either order and a command that never
touches timm never pays for it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any


class _RegisterAfterLoad(importlib.abc.Loader):
    """timm's own loader, followed by our registration."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        importlib.import_module("alphanet_zoo.timm_models")  # registers with the timm just loaded


class _TimmFinder(importlib.abc.MetaPathFinder):
    """Finds timm as the other finders do, once, and wraps its loader."""

    def find_spec(self, name, path=None, target=None):
        if name != "timm":
            return None
        sys.meta_path.remove(self)  # one shot; the other finders find timm
        spec = importlib.util.find_spec("timm")
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoad(spec.loader)
        return spec


def register_when_timm_loads() -> None:
    """Register now if timm is imported; wait for its import if it is installed; else nothing."""
    if "timm" in sys.modules:
        importlib.import_module("alphanet_zoo.timm_models")
    elif not any(isinstance(f, _TimmFinder) for f in sys.meta_path) and importlib.util.find_spec("timm"):
        sys.meta_path.insert(0, _TimmFinder())
