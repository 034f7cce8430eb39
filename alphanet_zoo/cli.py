"""The commands' shared vocabulary: one definition of every common flag, one way to fail, one way to talk.

Every ``alphanet-*`` command builds its parser from these parents, so a flag means the same thing
everywhere: ``--arch`` (name, alias, ``all``, comma list, or an architecture JSON file),
``--weights SPEC`` (`alphanet_zoo.weights.WeightsSpec`; ``--supernet PATH`` is a synonym where the
input is not always a supernet), ``--device auto|cpu|cuda|cuda:N``, ``--batch-size``, ``--workers``,
``--threads``, ``--seed``, ``--calib-data/--calib-batches/--calib-batch-size``, ``--out PATH`` (the
main output) and ``--json`` (stdout carries only JSON; everything human goes to stderr).

Exit status: 0 success; 2 bad usage or input; 1 a failure while working (verification, network,
I/O); 130 interrupted; 141 stdout closed early (a broken pipe, as a shell reports it). Each failure
is one line on stderr (``ALPHANET_DEBUG=1`` shows the traceback). `cli_main` catches the package's
own `AlphaNetError` and the system's ``OSError``, never a programming error.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import EXIT_RUNTIME_FAILURE, AlphaNetError, InputError, UsageError

EXIT_INTERRUPTED = 130
CALIB_BATCHES, CALIB_BATCH_SIZE = 64, 256  # the official recipe: 64 batches of 256 training images
EXIT_BROKEN_PIPE = 141
log = logging.getLogger("alphanet_zoo")


# ---- failing and talking ---------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _Handler(logging.Handler):
    def __init__(self, prog: str) -> None:
        super().__init__(logging.INFO)
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            print(f"{self.prog}: {level}{_one_line(record.getMessage())}", file=sys.stderr)
        except Exception:  # logging must never fail a command
            pass


def cli_main(prog: str) -> Callable[[Callable[[Sequence[str] | None], int | None]], Callable[..., int]]:
    """Decorate a command's ``main(argv)``: errors become one line on stderr and an exit status."""

    def wrap(main: Callable[[Sequence[str] | None], int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: Sequence[str] | None = None) -> int:
            handler = _Handler(prog)
            logger = logging.getLogger("alphanet_zoo")
            logger.addHandler(handler)
            level = logger.level
            logger.setLevel(logging.INFO)
            debug = bool(os.environ.get("ALPHANET_DEBUG"))
            try:
                return int(main(argv) or 0)
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
                print(f"{prog}: error: {_one_line(e)}{hint}", file=sys.stderr)
                return e.exit_code
            except OSError as e:
                if debug:
                    raise
                where = f" ({e.filename})" if getattr(e, "filename", None) else ""
                print(f"{prog}: error: {_one_line(e.strerror or e)}{where}", file=sys.stderr)
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
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)  # tqdm: None -> off when not a TTY
    return tqdm(iterable, **kwargs)


# ---- value types: each rejects NaN, infinity and out-of-range values naming the flag ------------

def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer within [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is outside the allowed range {_range(low, high)}")
        return value

    parse.__name__ = "integer"
    return parse


def number(low: float | None = None, high: float | None = None, *, open_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number within [low, high] (or (low, high] with ``open_low``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (low is not None and (value < low or (open_low and value == low))) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is outside the allowed range "
                                             f"{_range(low, high, open_low)}")
        return value

    parse.__name__ = "number"
    return parse


def _range(low: float | None, high: float | None, open_low: bool = False) -> str:
    left = "(" if open_low else "["
    return f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"


def parse_device(value: str):
    """``auto|cpu|cuda|cuda:N`` -> a ``torch.device``; `InputError` when that device is not there."""
    import torch

    text = value.strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or (text.startswith("cuda:") and text[5:].isdigit()):
        if not torch.cuda.is_available():
            raise InputError(f"--device {value}: no CUDA device is available to PyTorch")
        index = int(text[5:]) if ":" in text else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"--device {value}: there are only {torch.cuda.device_count()} CUDA devices")
        return torch.device("cuda", index)
    raise InputError(f"--device must be auto, cpu, cuda or cuda:N, got {value!r}")


# ---- architectures -------------------------------------------------------------------------------

def load_arch_file(path: str | os.PathLike):
    """An `ArchConfig` from a JSON file: its dict (as ``alphanet-search --out`` writes), or a model
    record (a folder's ``config.json``)."""
    from ._io import read_json
    from .config import ArchConfig

    data = read_json(path, f"architecture file {path}")
    if isinstance(data, dict) and "architecture" in data and "format" in data:
        data = data["architecture"]
    try:
        return ArchConfig.from_dict(data).validate()
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def parse_arch(value: str):
    """One ``--arch`` value -> (name, ArchConfig): a model name or alias, or a JSON file."""
    from .registry import model_info

    value = value.strip()
    if value.lower().endswith(".json") or os.sep in value or Path(value).is_file():
        return Path(value).stem, load_arch_file(value)
    try:
        info = model_info(value)
    except InputError as e:
        raise InputError(f"--arch: {e}; or give an architecture .json file") from None
    return info.name, info.arch


def parse_archs(value: str):
    """``--arch`` -> [(name, ArchConfig), ...]: ``all``, a comma list, names, aliases, JSON files."""
    from .registry import MODELS

    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise InputError("--arch needs a model name, 'all', a comma list or an architecture .json file")
    archs: list = []
    for item in items:
        if item.lower() == "all":
            archs.extend((name, info.arch) for name, info in MODELS.items())
        else:
            archs.append(parse_arch(item))
    return list(dict.fromkeys(archs))


def single_arch(value: str):
    """``--arch`` of a command that takes one model."""
    archs = parse_archs(value)
    if len(archs) != 1:
        raise UsageError(f"--arch names {len(archs)} models; this command takes one")
    return archs[0]


# ---- the parent parsers --------------------------------------------------------------------------

class HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's default after its help, unless the help says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or "%(default)" in text or not action.option_strings \
                or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with defaults shown in ``--help`` and usage errors raised as `UsageError` (one line)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # a typo must not silently become another flag
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(message)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def arch_flags(*, default: str | None = None, required: bool = False, many: bool = True) -> argparse.ArgumentParser:
    p = _parent()
    what = "model names, aliases or architecture .json files, comma-separated, or 'all'" if many \
        else "a model name or alias (a0..a6, a5_base) or an architecture .json file"
    p.add_argument("--arch", default=default, required=required, metavar="ARCH", help=what)
    return p


def weights_flags(*, default: str | None = "pretrained", supernet_synonym: bool = True) -> argparse.ArgumentParser:
    """``--weights SPEC`` (and ``--supernet PATH`` as its synonym, and hidden old spellings).

    With ``default=None`` the value stays None when no flag is given (the command decides)."""
    from .weights import GRAMMAR

    p = _parent()
    group = p.add_mutually_exclusive_group()
    group.add_argument("--weights", metavar="SPEC", default=None,
                       help=f"which weights: {GRAMMAR} (default: {default or 'pretrained'})")
    if supernet_synonym:
        group.add_argument("--supernet", metavar="PATH", dest="weights",
                           help="a supernet checkpoint: the same as --weights PATH")
    group.add_argument("--pretrained", action="store_const", const="pretrained", dest="weights",
                       help=argparse.SUPPRESS)
    group.add_argument("--random-init", action="store_const", const="random", dest="weights", help=argparse.SUPPRESS)
    p.set_defaults(weights=default)
    return p


def device_flags(default: str | None = "auto") -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--device", default=default, metavar="DEV", help="auto, cpu, cuda or cuda:N")
    return p


def threads_flags() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--threads", type=integer(1, 1024), default=None, metavar="N",
                   help="intra-op threads for PyTorch and the runtimes (default: the library's own)")
    return p


def batch_flags(default: int | None) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--batch-size", type=integer(1, 65536), default=default, metavar="N", help="images per batch")
    return p


def workers_flags(default: int | None) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--workers", type=integer(0, 256), default=default, metavar="N",
                   help="data-loading processes (0: in this process)")
    return p


def seed_flags(help_text: str = "random seed", default: int | None = 0) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--seed", type=integer(-2 ** 63, 2 ** 63 - 1), default=default, metavar="S", help=help_text)
    return p


def calibration_flags(*, required: bool = False) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--calib-data", metavar="DIR", required=required,
                   help="training images (synset or class folders) to re-calibrate BatchNorm statistics on first, "
                        "as the official test script does" + ("" if required else " (default: no calibration)"))
    p.add_argument("--calib-batches", type=integer(1, 100_000), metavar="N",
                   help=f"calibration batches (default: {CALIB_BATCHES})")
    p.add_argument("--calib-batch-size", type=integer(1, 65536), metavar="N",
                   help=f"images per calibration batch (default: {CALIB_BATCH_SIZE})")
    return p


def output_flags(help_text: str, *, required: bool = False, default: str | None = None) -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--out", metavar="PATH", required=required, default=default, help=help_text)
    return p


def json_flags() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--json", action="store_true",
                   help="print JSON to stdout (and only JSON: everything human goes to stderr)")
    return p


def command_parser(prog: str, description: str, parents: Sequence[argparse.ArgumentParser],
                   epilog: str | None = None) -> ArgumentParser:
    """A command's parser from the parents above (and the command's own flags added after)."""
    return ArgumentParser(prog=prog, description=description, parents=list(parents), epilog=epilog)


def calibration_from_args(args: argparse.Namespace, *, workers: int | None = None, crop_size: int = 224):
    """``--calib-*`` -> `alphanet_zoo.data.CalibrationBatches`, or None without ``--calib-data``."""
    from .data import calibration_batches

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
    from .supernet import EXTRACTED_FROM

    record = model.pretrained_cfg
    if record.source.startswith(EXTRACTED_FROM) and not record.calibrated:
        log.warning("%s is %s without BatchNorm re-calibration: it keeps the supernet's statistics, which do not "
                    "fit the subnet; use a folder from alphanet-extract --calib-data for faithful outputs",
                    record.name or "the model", record.source)


def set_threads(threads: int | None) -> None:
    """``--threads``: PyTorch's intra-op thread count (runtimes take it per session)."""
    if threads:
        import torch

        torch.set_num_threads(threads)

