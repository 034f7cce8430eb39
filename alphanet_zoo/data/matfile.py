"""A small reader of MATLAB level-5 MAT files, enough for the ILSVRC devkit's ``meta.mat``.

The devkit ships its class table (``synsets``: a struct array with ``ILSVRC2012_ID``, ``WNID``,
...) as a MAT file. Reading it here keeps scipy out of the dependencies. Supported: numeric and
char arrays, structs and cells, compressed (``miCOMPRESSED``) or not, either byte order. Not
supported (an error says so): sparse arrays, objects, MAT v7.3 (HDF5) files.

Values come back as plain Python: a numeric array is a flat list in column-major order (a scalar
when it has one element), a char array a ``str`` (rows joined), a struct array a list of dicts,
a cell array a list.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Any

from ..errors import InputError

# data types (MAT-file format, table 1-1) -> struct format characters
_NUMERIC_TYPES = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 9: "d", 12: "q", 13: "Q"}
_MI_MATRIX, _MI_COMPRESSED, _MI_UTF8, _MI_UTF16, _MI_UTF32 = 14, 15, 16, 17, 18
# array classes
_CELL, _STRUCT, _OBJECT, _CHAR, _SPARSE = 1, 2, 3, 4, 5
_NUMERIC_CLASSES = range(6, 16)


#: Larger files, or compressed parts that inflate beyond this, are refused (meta.mat is about 200 kB).
MAX_MAT_BYTES = 64 << 20


class MatFileError(InputError):
    """A file that is not a level-5 MAT file, or uses a feature this reader does not have."""


def load_mat(path: str | os.PathLike) -> dict[str, Any]:
    """The named variables of a level-5 MAT file, as Python values."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MAT_BYTES + 1)
    except OSError as e:
        raise MatFileError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > MAX_MAT_BYTES:
        raise MatFileError(f"{path} is larger than {MAX_MAT_BYTES >> 20} MiB; not a devkit meta.mat")
    if len(data) < 128:
        raise MatFileError(f"{path} is not a MAT file (too short)")
    if data[:19] == b"MATLAB 7.3 MAT-file" or data[124:128] in (b"\x00\x02IM", b"\x02\x00MI"):
        raise MatFileError(f"{path} is a MAT v7.3 (HDF5) file; save it with -v7 or give map_clsloc.txt")
    indicator = data[126:128]
    if indicator == b"IM":
        endian = "<"
    elif indicator == b"MI":
        endian = ">"
    else:
        raise MatFileError(f"{path} is not a level-5 MAT file")
    variables: dict[str, Any] = {}
    try:
        _Reader(data, endian, 128).read_variables(variables)
    except (struct.error, zlib.error, IndexError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise MatFileError(f"{path} is damaged or not a MAT file: {type(e).__name__}: {e}") from None
    return variables


def _inflate(payload: bytes) -> bytes:
    inflater = zlib.decompressobj()
    data = inflater.decompress(payload, MAX_MAT_BYTES + 1)
    if len(data) > MAX_MAT_BYTES or inflater.unconsumed_tail:
        raise ValueError(f"a compressed part inflates beyond {MAX_MAT_BYTES >> 20} MiB")
    return data


class _Reader:
    def __init__(self, data: bytes, endian: str, offset: int = 0) -> None:
        self.data, self.endian, self.pos = data, endian, offset

    def read_variables(self, out: dict[str, Any]) -> None:
        while self.pos + 8 <= len(self.data):
            dtype, payload = self._element()
            if dtype == _MI_COMPRESSED:
                _Reader(_inflate(payload), self.endian).read_variables(out)
            elif dtype == _MI_MATRIX:
                name, value = self._matrix(payload)
                out[name] = value

    def _element(self) -> tuple[int, bytes]:
        """One data element: (type, payload); handles the small (4-byte) element format."""
        (word,) = struct.unpack_from(self.endian + "I", self.data, self.pos)
        if word >> 16:  # small data element: size in the high half, type in the low half
            dtype, size = word & 0xFFFF, word >> 16
            payload = self.data[self.pos + 4:self.pos + 4 + size]
            self.pos += 8
            return dtype, payload
        dtype, size = struct.unpack_from(self.endian + "II", self.data, self.pos)
        start = self.pos + 8
        payload = self.data[start:start + size]
        if len(payload) != size:
            raise IndexError("data element runs past the end of the file")
        # compressed elements are not padded; everything else is padded to 8 bytes
        self.pos = start + size + (0 if dtype == _MI_COMPRESSED else -size % 8)
        return dtype, payload

    def _matrix(self, payload: bytes) -> tuple[str, Any]:
        if not payload:
            return "", []  # an empty array may be written as a bare, zero-length miMATRIX
        sub = _Reader(payload, self.endian)
        _, flags = sub._element()
        array_class = struct.unpack_from(self.endian + "I", flags)[0] & 0xFF
        _, dims_raw = sub._element()
        dims = list(struct.unpack(self.endian + f"{len(dims_raw) // 4}i", dims_raw))
        _, name_raw = sub._element()
        name = name_raw.decode("ascii")
        count = 1
        for d in dims:
            count *= d
        if array_class in _NUMERIC_CLASSES:
            values = sub._numbers()
            return name, values[0] if len(values) == 1 else values
        if array_class == _CHAR:
            return name, sub._chars(dims)
        if array_class == _STRUCT:
            _, length_raw = sub._element()
            length = struct.unpack(self.endian + "i", length_raw)[0]
            _, names_raw = sub._element()
            fields = [names_raw[i:i + length].split(b"\0", 1)[0].decode("ascii")
                      for i in range(0, len(names_raw), length)] if length else []
            items = []
            for _ in range(count):
                items.append({f: sub._matrix(sub._element()[1])[1] for f in fields})
            return name, items
        if array_class == _CELL:
            return name, [sub._matrix(sub._element()[1])[1] for _ in range(count)]
        kind = {_OBJECT: "object", _SPARSE: "sparse"}.get(array_class, f"class {array_class}")
        raise MatFileError(f"variable {name!r} is a {kind} array, which this reader does not support")

    def _numbers(self) -> list:
        dtype, raw = self._element()
        fmt = _NUMERIC_TYPES.get(dtype)
        if fmt is None:
            raise MatFileError(f"unsupported numeric data type {dtype}")
        size = struct.calcsize(fmt)
        values = list(struct.unpack(self.endian + fmt * (len(raw) // size), raw[:len(raw) // size * size]))
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]

    def _chars(self, dims: list[int]) -> str:
        if self.pos >= len(self.data):
            return ""
        dtype, raw = self._element()
        if dtype == _MI_UTF8 or dtype in (1, 2):
            codes = list(raw.decode("utf-8")) if dtype == _MI_UTF8 else [chr(b) for b in raw]
        elif dtype in (_MI_UTF16, 4):
            n = len(raw) // 2
            codes = [chr(c) for c in struct.unpack(self.endian + f"{n}H", raw[:2 * n])]
        elif dtype == _MI_UTF32:
            n = len(raw) // 4
            codes = [chr(c) for c in struct.unpack(self.endian + f"{n}I", raw[:4 * n])]
        else:
            raise MatFileError(f"unsupported character data type {dtype}")
        rows = dims[0] if dims else 1
        if rows <= 1:
            return "".join(codes)
        cols = len(codes) // rows  # column-major: character (r, c) is codes[c * rows + r]
        return "\n".join("".join(codes[c * rows + r] for c in range(cols)) for r in range(rows))
