"""The huggingface_hub client, quiet while it works for us: its words go to our logger, its bars nowhere.

While a `quiet_client` block runs, records of the client's ``huggingface_hub`` logger (its retry
and resume messages) are passed to the ``alphanet_zoo.huggingface_hub`` logger at INFO (lower
levels kept) and to nothing else (the client's own stderr handler is detached meanwhile), and
its progress bars are off, unless the user asked for
them with ``HF_HUB_DISABLE_PROGRESS_BARS=0``. Blocks nest and overlap across threads: the first
to start changes the client's logger and bars, the last to end restores them as they were.
"""
from __future__ import annotations

import importlib
import logging
import threading
from contextlib import contextmanager
from typing import Iterator

CLIENT_LOGGER = "alphanet_zoo.huggingface_hub"
_CLIENT_NAME = "huggingface_hub"

_lock = threading.Lock()
_depth = 0
_restore: list = []  # what the first block changed, undone by the last


class _ToOurLogger(logging.Handler):
    """Passes the client's records on to `CLIENT_LOGGER`, warnings and errors at INFO."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logging.getLogger(CLIENT_LOGGER).log(min(record.levelno, logging.INFO), "%s", record.getMessage())
        except Exception:  # logging must never fail a download
            self.handleError(record)


def _quiet() -> list:
    """Route the client's logger and turn its bars off; returns the undo steps."""
    client = logging.getLogger(_CLIENT_NAME)
    handler, propagate, own = _ToOurLogger(), client.propagate, list(client.handlers)
    for h in own:  # the client installs its own stderr handler
        client.removeHandler(h)
    client.addHandler(handler)
    client.propagate = False

    def restore_logger() -> None:
        client.removeHandler(handler)
        for h in own:
            client.addHandler(h)
        client.propagate = propagate

    undo = [restore_logger]
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
        client_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")  # the module, not its tqdm class
    except ImportError:  # pragma: no cover - a client without these switches
        return undo
    # HF_HUB_DISABLE_PROGRESS_BARS=0 (read at the client's import) is the user asking for the bars
    if getattr(client_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None) is False:
        return undo
    states = getattr(client_tqdm, "progress_bar_states", None)
    if not isinstance(states, dict):  # pragma: no cover - a client that keeps its switch elsewhere
        if not are_progress_bars_disabled():
            disable_progress_bars()
            undo.append(enable_progress_bars)
        return undo
    saved = dict(states)

    def restore_bars() -> None:
        states.clear()
        states.update(saved)  # the global switch and every group's, as they were

    disable_progress_bars()
    undo.append(restore_bars)
    return undo


@contextmanager
def quiet_client() -> Iterator[None]:
    """Within the block, the client's messages go to `CLIENT_LOGGER` and its progress bars are off."""
    global _depth
    with _lock:
        if _depth == 0:
            _restore[:] = _quiet()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for step in reversed(_restore):
                    step()
                _restore.clear()
