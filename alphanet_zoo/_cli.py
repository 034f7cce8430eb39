"""Shared plumbing of the command-line tools: architecture arguments, clean errors, progress bars.

Every ``alphanet-*`` command wraps its ``main`` with `cli_main`, so bad input ends in one line
on stderr (``alphanet-export: error: ...``) and a non-zero exit, never a bare traceback
(set ``ALPHANET_DEBUG=1`` to see the traceback).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .checkpoint import CheckpointError
from .config import ArchConfig
from .hub import WeightsIntegrityError, WeightsUnavailableError
from .registry import MODELS, model_info

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CLIError(Exception):
    """An error to report to the user as one line (no traceback)."""


def load_arch_file(path: str | os.PathLike) -> ArchConfig:
    """An `ArchConfig` from a JSON file holding its dict (as ``to_dict()`` and ``alphanet-search`` write)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"architecture file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CLIError(f"{path} is not a readable JSON architecture file: {e}") from None
    try:
        return ArchConfig.from_dict(data).validate()
    except (TypeError, ValueError) as e:
        raise CLIError(f"{path}: {e}") from None


def parse_arch(value: str) -> tuple[str, ArchConfig]:
    """``--arch`` value -> (name, config): a model name or alias, or a path to a JSON config."""
    if value.lower().endswith(".json") or os.sep in value or Path(value).is_file():
        return Path(value).stem, load_arch_file(value)
    try:
        info = model_info(value)
    except ValueError as e:
        raise CLIError(f"{e}; or give a path to an architecture .json file") from None
    return info.name, info.arch


def parse_archs(value: str) -> list[tuple[str, ArchConfig]]:
    """Like `parse_arch`, plus ``all`` for every published model."""
    if value.strip().lower() == "all":
        return [(name, info.arch) for name, info in MODELS.items()]
    return [parse_arch(value)]


def cli_main(prog: str) -> Callable[[Callable[[Sequence[str] | None], int | None]], Callable[..., int]]:
    """Decorate a command's ``main(argv)``: known errors become one line on stderr and exit code 2."""

    def wrap(main: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            try:
                return int(main(argv) or 0)
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except (CLIError, CheckpointError, WeightsUnavailableError, WeightsIntegrityError, FileNotFoundError,
                    PermissionError, IsADirectoryError, NotADirectoryError, ValueError, TypeError) as e:
                if os.environ.get("ALPHANET_DEBUG"):
                    raise
                print(f"{prog}: error: {e}", file=sys.stderr)
                return EXIT_ERROR

        return run

    return wrap


def progress(iterable: Iterable, **kwargs):
    """A tqdm progress bar on stderr (silent when stderr is not a terminal unless forced)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)  # tqdm: None -> off when not a TTY
    return tqdm(iterable, **kwargs)
