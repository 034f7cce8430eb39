"""The commands' argument vocabulary: one definition of every common flag and value type.

Every ``alphanet-*`` command builds its parser from these parents, so a flag means the same thing
everywhere: ``--arch`` (name, alias, ``all``, comma list, or an architecture JSON file),
``--weights SPEC`` (`alphanet_zoo.weights.WeightsSpec`; ``--supernet PATH`` is a synonym where the
input is not always a supernet), ``--device auto|cpu|cuda|cuda:N``, ``--batch-size``, ``--workers``,
``--threads``, ``--seed``, ``--calib-data/--calib-batches/--calib-batch-size``, ``--out PATH`` (the
main output), ``--resume [FILE]``/``--no-resume`` (continue an interrupted run, or refuse to) and
``--json`` (stdout carries only JSON; everything human goes to stderr). Usage
errors are `UsageError`, one line.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path
from typing import Callable, Sequence

from .._io import read_json
from ..config import ArchConfig
from ..errors import InputError, UsageError
from ..registry import MODELS, model_info
from ..weights import GRAMMAR

CALIB_BATCHES, CALIB_BATCH_SIZE = 64, 256  # the official recipe: 64 batches of 256 training images


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


# ---- architectures -------------------------------------------------------------------------------

def load_arch_file(path: str | os.PathLike):
    """An `ArchConfig` from a JSON file: its dict (as ``alphanet-search --out`` writes), or a model
    record (a folder's ``config.json``)."""
    data = read_json(path, f"architecture file {path}")
    if isinstance(data, dict) and "architecture" in data and "format" in data:
        data = data["architecture"]
    try:
        return ArchConfig.from_dict(data).validate(standalone=True)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def parse_arch(value: str):
    """One ``--arch`` value -> (name, ArchConfig): a model name or alias, or a JSON file."""
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


def dist_flags() -> argparse.ArgumentParser:
    """``--dist-timeout``: how long a process of a ``torchrun`` run waits for the others."""
    p = _parent()
    p.add_argument("--dist-timeout", type=number(10, 86400), default=1800, metavar="S",
                   help="under torchrun: seconds a process waits for the others before the run stops with an error "
                        "(a process that dies is noticed at once)")
    return p


def resume_flags(resume_help: str, no_resume_help: str) -> argparse.ArgumentParser:
    """``--resume [FILE]`` and ``--no-resume``, the one resume vocabulary of the commands that can go on
    after an interruption. ``args.resume``: None (neither: the command's default), True (``--resume``),
    FILE (``--resume FILE``) or False (``--no-resume``); see `resume_choice`."""
    p = _parent()
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", nargs="?", const=True, default=None, metavar="FILE", help=resume_help)
    group.add_argument("--no-resume", dest="resume", action="store_const", const=False, default=None,
                       help=no_resume_help)
    return p


def resume_choice(args: argparse.Namespace, default: bool) -> "bool | str":
    """``args.resume`` with the command's ``default`` for None. In a command with ``key=value`` arguments
    (``args.overrides``), ``--resume key=value`` gives that override, not a FILE named so."""
    value = args.resume
    overrides = getattr(args, "overrides", None)
    if isinstance(value, str) and overrides is not None and "=" in value and not Path(value).exists():
        overrides.insert(0, value)
        value = True
    return default if value is None else value


def json_flags() -> argparse.ArgumentParser:
    p = _parent()
    p.add_argument("--json", action="store_true",
                   help="print JSON to stdout (and only JSON: everything human goes to stderr)")
    return p


def command_parser(prog: str, description: str, parents: Sequence[argparse.ArgumentParser],
                   epilog: str | None = None) -> ArgumentParser:
    """A command's parser from the parents above (and the command's own flags added after)."""
    return ArgumentParser(prog=prog, description=description, parents=list(parents), epilog=epilog)


