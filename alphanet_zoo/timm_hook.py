"""Registering the published models with timm without importing timm (about 3 s) in every process.

`import alphanet_zoo` calls `register_when_timm_loads`: when timm is already imported the models
are registered at once (`alphanet_zoo.timm_models`); otherwise the finder of the top-level module
``_alphanet_zoo_timm_hook`` (the one ``alphanet_zoo_timm.pth`` also installs at interpreter start)
waits on ``sys.meta_path`` for the first ``import timm`` and registers them right after timm has
loaded, so ``timm.create_model("alphanet_a0")`` works in either order and a command that never
touches timm never pays for it.
"""
from __future__ import annotations

import importlib
import sys

import _alphanet_zoo_timm_hook as startup_hook


def register_when_timm_loads() -> None:
    """Register now if timm is imported; else wait for its import (a finder that costs nothing without timm)."""
    if "timm" in sys.modules:
        importlib.import_module(startup_hook.REGISTRY_MODULE)
    else:
        startup_hook.install()
