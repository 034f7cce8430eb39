"""Reading JSON objects into frozen dataclasses, driven by the dataclasses' own field types.

`from_dict(cls, data, key)` walks ``dataclasses.fields(cls)``: it rejects unknown and missing keys,
checks every value against its annotation (``int``, ``float``, ``bool``, ``str``, an `enum.Enum`,
``X | None``, ``tuple[X, ...]``, fixed tuples, nested dataclasses) and builds the object, whose
``__post_init__`` then makes its own domain checks. Every problem is an `InputError` naming the key
path (``measured[0].top1``). Field metadata refines a field:

- ``range``: ``(low, high)`` inclusive bounds of a number;
- ``key``: the JSON key when it differs from the field name;
- ``derived``: computed from other fields, never read (the caller supplies it).

A missing field takes its default; a missing ``X | None`` field without one is None.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import math
import types
import typing
from typing import Any, Mapping, TypeVar

from .errors import InputError, InputTypeError

#: Longest string accepted from a file.
MAX_TEXT = 2000

T = TypeVar("T")


def shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters, for error messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def json_key(f: dataclasses.Field) -> str:
    """The JSON key of a dataclass field (its ``key`` metadata, else its name)."""
    return f.metadata.get("key", f.name)


def _sub(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def read_fields(cls: type, data: Any, key: str = "", *, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The checked constructor arguments of dataclass ``cls`` from the JSON object ``data``.

    ``key`` is the path of ``data`` in its document ("" at the top), for messages. ``extra`` names
    keys the caller handles itself; they are allowed and not read.
    """
    at = f"{key}: " if key else ""
    if not isinstance(data, Mapping):
        raise InputTypeError(f"{key or 'the document'} must be a JSON object, got {shown(data)}")
    readable = [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("derived")]
    known = [json_key(f) for f in readable] + list(extra)
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise InputError(f"{at}unknown key {unknown[0]!r}; known: {', '.join(known)}")
    hints = _hints(cls)
    missing = [json_key(f) for f in readable if json_key(f) not in data and _required(f, hints[f.name])]
    if missing:
        raise InputError(f"{at}missing {', '.join(missing)}")
    out = {}
    for f in readable:
        name = json_key(f)
        if name in data:
            out[f.name] = check(hints[f.name], data[name], _sub(key, name), f.metadata.get("range"))
        elif not _has_default(f):
            out[f.name] = None  # an optional field left out
    return out


def from_dict(cls: type[T], data: Any, key: str = "") -> T:
    """A ``cls`` built from the JSON object ``data`` (see the module's docstring)."""
    return cls(**read_fields(cls, data, key))


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _required(f: dataclasses.Field, hint: Any) -> bool:
    return not _has_default(f) and not _optional(hint)


def _optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def check(hint: Any, value: Any, key: str, bounds: tuple[float, float] | None = None) -> Any:
    """``value`` checked against the annotation ``hint`` (and ``bounds``), converted to it: lists
    become tuples, JSON objects become dataclasses, strings become enum members."""
    if _optional(hint):
        if value is None:
            return None
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"{key}: unsupported annotation {hint}")
        return check(rest[0], value, key, bounds)
    if hint is bool:
        if not isinstance(value, bool):
            raise InputTypeError(f"{key} must be true or false, got {shown(value)}")
        return value
    if hint is int:
        return _integer(value, key, bounds)
    if hint is float:
        return _number(value, key, bounds)
    if hint is str:
        if not isinstance(value, str) or len(value) > MAX_TEXT:
            raise InputTypeError(f"{key} must be a string of at most {MAX_TEXT} characters, got {shown(value)}")
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            raise InputError(f"{key} must be one of {', '.join(str(m.value) for m in hint)}, "
                             f"got {shown(value)}") from None
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if typing.get_origin(hint) is tuple:
        return _tuple(typing.get_args(hint), value, key, bounds)
    raise TypeError(f"{key}: unsupported annotation {hint}")


def _tuple(args: tuple[Any, ...], value: Any, key: str, bounds: tuple[float, float] | None) -> tuple:
    variable = len(args) == 2 and args[1] is Ellipsis
    if not isinstance(value, (list, tuple)) or (not variable and len(value) != len(args)):
        size = "" if variable else f" of {len(args)} values"
        raise InputTypeError(f"{key} must be a list{size}, got {shown(value)}")
    items = [args[0]] * len(value) if variable else list(args)
    return tuple(check(h, v, f"{key}[{i}]", bounds) for i, (h, v) in enumerate(zip(items, value)))


def _integer(value: Any, key: str, bounds: tuple[float, float] | None) -> int:
    # JSON has one kind of number: 224.0 is the integer 224
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{key} must be an integer{_range(bounds)}, got {shown(value)}")
    _in_bounds(value, key, bounds, "an integer")
    return value


def _number(value: Any, key: str, bounds: tuple[float, float] | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputTypeError(f"{key} must be a number{_range(bounds)}, got {shown(value)}")
    _in_bounds(value, key, bounds, "a number")
    return float(value)


def _range(bounds: tuple[float, float] | None) -> str:
    return f" from {bounds[0]:g} to {bounds[1]:g}" if bounds else ""


def _in_bounds(value: float, key: str, bounds: tuple[float, float] | None, kind: str) -> None:
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise InputError(f"{key} must be {kind}{_range(bounds)}, got {shown(value)}")
