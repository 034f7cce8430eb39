"""How every command runs: one line per failure and an exit status (`cli_main`), where its words go
(`Console`), progress bars, and the run helpers the commands share (threads, calibration from the
``--calib-*`` flags, the warning for an uncalibrated slice, the ``torchrun`` context).

Exit status: 0 success; 2 bad usage or input; 1 a failure while working (verification, network,
I/O); 130 interrupted (Ctrl-C); 143 terminated (SIGTERM); 141 stdout closed early (a broken pipe, as
a shell reports it). Each failure is one line on stderr (``ALPHANET_DEBUG=1`` shows the traceback). `cli_main` catches the package's
own `AlphaNetError` and the system's ``OSError``, never a programming error.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from ..data import calibration_batches
from ..errors import EXIT_RUNTIME_FAILURE, AlphaNetError, UsageError, brief
from ..hub_quiet import CLIENT_LOGGER
from .flags import CALIB_BATCH_SIZE, CALIB_BATCHES

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
EXIT_TERMINATED = 143
log = logging.getLogger("alphanet_zoo")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the command is, as Ctrl-C raises ``KeyboardInterrupt``: ``finally`` and ``with``
    blocks (temporary folders, staged files) clean up on the way out, and the command exits 143."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, the first SIGTERM raises `Terminated` (later ones are ignored while it unwinds).
    Code that stops in its own way (the trainers' checkpoint at the next step) installs its own handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    fired: list[int] = []

    def handler(signum, frame) -> None:
        if not fired:
            fired.append(signum)
            raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        # code inside may have set its own for what follows (a stopped torchrun process ignores the launcher's
        # SIGTERM while it finishes): restore only our own
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)


def printable(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``): a name read from disk (a class folder, an
    image file) cannot start a line of its own in a command's output, or send a terminal escape."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _said(text) -> str:
    """A message as one line, whole (a command's failure is told in full)."""
    return brief(text, limit=None, first_line=False)


class _Handler(logging.Handler):
    """The package's log records as ``prog: message`` lines on stderr; the Hub client's chatter (its
    retries, passed on to `CLIENT_LOGGER`) only with ``ALPHANET_DEBUG``: the error that follows says it all."""

    def __init__(self, prog: str, debug: bool = False) -> None:
        super().__init__(logging.INFO)
        self.prog, self.debug = prog, debug

    def emit(self, record: logging.LogRecord) -> None:
        if not self.debug and record.name.startswith(CLIENT_LOGGER) and record.levelno < logging.WARNING:
            return
        try:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            print(f"{self.prog}: {level}{_said(record.getMessage())}", file=sys.stderr)
        except Exception:  # logging must never fail a command
            pass


def cli_main(prog: str) -> Callable[[Callable[[Sequence[str] | None], int | None]], Callable[..., int]]:
    """Decorate a command's ``main(argv)``: errors become one line on stderr and an exit status."""

    def wrap(main: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            debug = bool(os.environ.get("ALPHANET_DEBUG"))
            handler = _Handler(prog, debug)
            logger = logging.getLogger("alphanet_zoo")
            logger.addHandler(handler)
            level = logger.level
            logger.setLevel(logging.INFO)
            try:
                with sigterm_as_interrupt():
                    return int(main(argv) or 0)
            except Terminated:
                print(f"{prog}: terminated (SIGTERM)", file=sys.stderr)
                return EXIT_TERMINATED
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return EXIT_INTERRUPTED
            except BrokenPipeError:
                _quiet_stdout()
                return EXIT_BROKEN_PIPE
            except AlphaNetError as e:
                if debug:
                    raise
                hint = " (see --help)" if isinstance(e, UsageError) else ""
                print(f"{prog}: error: {_said(e)}{hint}", file=sys.stderr)
                return e.exit_code
            except OSError as e:
                if debug:
                    raise
                where = f" ({e.filename})" if getattr(e, "filename", None) else ""
                print(f"{prog}: error: {_said(e.strerror or e)}{where}", file=sys.stderr)
                return EXIT_RUNTIME_FAILURE
            finally:
                logger.removeHandler(handler)
                logger.setLevel(level)
                try:
                    sys.stdout.flush()
                except BrokenPipeError:
                    _quiet_stdout()

        return run

    return wrap


class Console:
    """Where a command's words go: results and status lines to stdout, warnings and errors (through
    the ``alphanet_zoo`` logger and `cli_main`) to stderr, progress bars to stderr when it is a
    terminal. With ``--json`` stdout carries only JSON (one document, or one line per record),
    which replaces the human-readable results, and status lines move to stderr."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode

    def result(self, text: str = "") -> None:
        """Human-readable results (tables) on stdout; nothing in JSON mode (the JSON carries them)."""
        if not self.json_mode:
            print(text, flush=True)

    def status(self, text: str) -> None:
        """Status lines (what was loaded, written): stdout, or stderr in JSON mode."""
        print(text, file=sys.stderr if self.json_mode else sys.stdout, flush=True)

    def json(self, document: Any) -> None:
        """The JSON document (JSON mode only)."""
        if self.json_mode:
            print(json.dumps(document, indent=2), flush=True)

    def json_line(self, record: Any) -> None:
        """One JSON line (JSON mode only; per-image output)."""
        if self.json_mode:
            print(json.dumps(record), flush=True)


class SilentConsole(Console):
    """The console of a process other than rank 0 in a ``torchrun`` run: says nothing (rank 0 speaks)."""

    def result(self, text: str = "") -> None:
        pass

    def status(self, text: str) -> None:
        pass

    def json(self, document: Any) -> None:
        pass

    def json_line(self, record: Any) -> None:
        pass


def progress(iterable: Iterable | None = None, **kwargs):
    """A tqdm progress bar on stderr (off when stderr is not a terminal)."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)  # tqdm: None -> off when not a TTY
    return tqdm(iterable, **kwargs)


class EpochLine:
    """`progress`'s stand-in where stderr is no terminal (a log file, a pipe): one line when the bar
    closes (the epoch's steps, time, rate and last postfix), not a redrawn bar. tqdm's ``update``,
    ``set_postfix`` and ``close``."""

    def __init__(self, prog: str, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
                 **_: Any) -> None:
        self.prog, self.total, self.desc, self.unit, self.n = prog, total, desc, unit, initial
        self.postfix: dict[str, Any] = {}
        self.start = time.perf_counter()
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.closed or not self.n:
            return
        self.closed = True
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else str(self.n)
        extra = "".join(f", {key} {value}" for key, value in self.postfix.items())
        print(f"{self.prog}: {self.desc}: {done} {self.unit}s in {elapsed:.1f} s ({self.n / elapsed:.2f} "
              f"{self.unit}/s){extra}", file=sys.stderr, flush=True)


def epoch_progress(prog: str) -> Callable[..., Any]:
    """A progress factory for a trainer: tqdm bars with rate and ETA on a terminal, else an `EpochLine` per bar."""

    def make(**kwargs: Any):
        stream = sys.stderr
        if getattr(stream, "isatty", lambda: False)():
            return progress(None, **kwargs)
        return EpochLine(prog, **kwargs)

    return make


def calibration_from_args(args: argparse.Namespace, *, workers: int | None = None, crop_size: int = 224):
    """``--calib-*`` -> `alphanet_zoo.data.CalibrationBatches`, or None without ``--calib-data``."""
    if not getattr(args, "calib_data", None):
        given = [flag for flag, value in (("--calib-batches", args.calib_batches),
                                          ("--calib-batch-size", args.calib_batch_size)) if value is not None]
        if given:
            raise UsageError(f"{' and '.join(given)} only apply with --calib-data")
        return None
    args.calib_batches = args.calib_batches or CALIB_BATCHES
    args.calib_batch_size = args.calib_batch_size or CALIB_BATCH_SIZE
    return calibration_batches(args.calib_data, args.calib_batches, args.calib_batch_size, args.seed,
                               args.workers if workers is None else workers, crop_size)


def warn_if_uncalibrated(model: Any) -> None:
    """Warn when ``model`` was sliced from a supernet and its BatchNorm statistics were never re-calibrated
    (its outputs are not those of the subnet: `alphanet-extract --calib-data` makes a calibrated folder)."""
    record = model.pretrained_cfg
    if record.needs_calibration:
        log.warning("%s is %s without BatchNorm re-calibration: it keeps the supernet's statistics, which do not "
                    "fit the subnet; use a folder from alphanet-extract --calib-data for faithful outputs",
                    record.name or "the model", record.source)


def set_threads(threads: int | None) -> None:
    """``--threads``: PyTorch's intra-op thread count (runtimes take it per session)."""
    if threads:
        torch.set_num_threads(threads)

