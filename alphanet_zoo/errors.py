"""The package's exceptions: one base, `AlphaNetError`, and a split by who must act.

`InputError` (also a ``ValueError``): what the caller gave cannot be used (a bad name, file,
folder, image, flag value); the commands exit with status 2. Every other `AlphaNetError` is a
failure while doing the work (the network, a verification, a write); the commands exit with 1.
The commands catch `AlphaNetError` (and ``OSError`` from the system) and nothing broader, so a
programming error still shows its traceback.
"""
from __future__ import annotations

import re

EXIT_RUNTIME_FAILURE = 1
EXIT_BAD_INPUT = 2


class AlphaNetError(Exception):
    """Base of every error this package raises on purpose."""

    exit_code = EXIT_RUNTIME_FAILURE


class InputError(AlphaNetError, ValueError):
    """Unusable input: a name, value, file or folder the caller gave."""

    exit_code = EXIT_BAD_INPUT


class InputTypeError(InputError, TypeError):
    """Input of the wrong type (a config field that is not a list of integers, ...)."""


class UsageError(InputError):
    """A command-line usage error (flags that do not fit together, a value out of range)."""


class OutputError(AlphaNetError, OSError):
    """An output that cannot be written (missing or read-only folder, a folder in a file's place, disk full)."""


class OutputPathError(OutputError):
    """An output path that is wrong before any work starts (no such folder, not writable, a folder
    where a file belongs): bad input, exit status 2."""

    exit_code = EXIT_BAD_INPUT


_SOURCE_LOCATION = re.compile(r"\[[^\]]*\.(?:cc|cpp|h|py):\d+\]\s*")  # "[../gloo/transport/tcp/pair.cc:598] "


def brief(error: BaseException | str, limit: int | None = 300, *, first_line: bool = True) -> str:
    """The one-line form of an error (or a message) for a user: its first line (runtimes append stack
    traces and advice; ``first_line=False`` keeps every line, joined), C++ source locations dropped,
    whitespace collapsed, at most ``limit`` characters; the exception's type name when it says nothing."""
    text = str(error).strip()
    if first_line and text:
        text = text.splitlines()[0]
    text = _SOURCE_LOCATION.sub("", text)
    text = text.split(". This is typically", 1)[0]
    text = " ".join(text.split())[:limit]
    return text or (type(error).__name__ if isinstance(error, BaseException) else "")
