"""The ``alphanet-*`` commands, one module each, and what they share: `flags` (the argument vocabulary)
and `running` (failing, talking, and the run helpers). The libraries (`export`, `eval`, `search`,
`train`) never import argparse; everything that reads a command line lives here.

Each command module has ``main(argv=None) -> int``; the console scripts in setup.cfg point at them.
"""
from __future__ import annotations

import importlib
from typing import Any

#: old names of three mains, kept for code that imported them from ``alphanet_zoo.commands``
_MAINS = {"models_main": "models", "extract_main": "extract", "predict_main": "predict"}


def __getattr__(name: str) -> Any:
    # the mains are imported on first use, so a console script loads only its own command's modules
    if name in _MAINS:
        return importlib.import_module(f"{__name__}.{_MAINS[name]}").main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
