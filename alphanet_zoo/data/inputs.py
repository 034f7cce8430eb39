"""The images a prediction run is given: files, folders, glob patterns and lists of paths, in one fixed order.

`collect_images` expands what a user names into one list of paths. A folder is walked recursively,
image suffixes only, sorted by path so every run (and every process of a distributed run) sees the
same order; hidden files and folders, non-images, and folders reached a second time (symlink loops,
links to a folder already walked) are skipped and counted, never followed forever. A file named
explicitly, on the command line or in a list, is taken whatever its suffix (and as often as it is
named): if it cannot be read, it becomes an error row, not a silent drop. A file that folders and
patterns reach more than once is kept once.
"""
from __future__ import annotations

import glob
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TextIO

from ..errors import InputError
from .images import is_image_file

GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class ImageInputs:
    """The paths to predict, in order, and what was skipped on the way (reason -> count)."""

    paths: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    def describe_skipped(self) -> str:
        """"3 hidden, 1 not an image" (empty when nothing was skipped)."""
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: str, out: ImageInputs, seen_folders: set[tuple[int, int]],
          match: Callable[[str], bool] | None = None) -> Iterator[str]:
    """The image files under ``root`` (those whose path ``match`` accepts), sorted; each real folder visited
    once (by device and inode)."""
    found: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = os.stat(folder)
        except OSError:
            out.skipped["unreadable folder"] += 1
            continue
        if (st.st_dev, st.st_ino) in seen_folders:
            out.skipped["folder reached twice (symlink loop or repeat)"] += 1
            continue
        seen_folders.add((st.st_dev, st.st_ino))
        try:
            entries = list(os.scandir(folder))
        except OSError:
            out.skipped["unreadable folder"] += 1
            continue
        for entry in entries:
            if match is not None and not entry.is_dir() and not match(entry.path):
                continue
            if _hidden(entry.name):
                out.skipped["hidden"] += 1
            elif entry.is_dir():  # follows links; a loop ends at the seen check above
                stack.append(entry.path)
            elif not entry.is_file():
                out.skipped["not a file (broken link, device, socket)"] += 1
            elif not is_image_file(entry.name):
                out.skipped["not an image"] += 1
            else:
                found.append(entry.path)
    yield from sorted(found)


def _pattern(pattern: str) -> Callable[[str], bool]:
    """A glob pattern with ``**`` (any depth of folders, none included) as a test on paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    regex = re.compile("".join(out) + r"\Z")
    return lambda path: regex.match(path) is not None


def _lines(files_from: str | os.PathLike | TextIO) -> Iterator[str]:
    if isinstance(files_from, io.TextIOBase) or hasattr(files_from, "readline"):
        handle = files_from
    else:
        try:
            handle = open(files_from, encoding="utf-8")
        except OSError as e:
            raise InputError(f"cannot read the list of files {files_from}: {e.strerror or e}") from None
    with handle:
        try:
            for line in handle:
                line = line.rstrip("\r\n")
                if line.strip():
                    yield line
        except UnicodeDecodeError:
            raise InputError(f"the list of files {getattr(handle, 'name', files_from)} is not UTF-8 text") from None


def collect_images(inputs: Iterable[str | os.PathLike] = (), files_from: str | os.PathLike | TextIO | None = None,
                   ) -> ImageInputs:
    """Expand ``inputs`` (files, folders, glob patterns) and the lines of ``files_from`` (a path or an open
    text stream such as stdin: one path per line, blank lines ignored) into `ImageInputs`.

    A named path that does not exist is kept (it becomes an error row) when it comes from a list; on the
    command line it is an `InputError`, as is a pattern that matches nothing. Relative paths stay relative
    (as given), so rows name images the way the user did.
    """
    out = ImageInputs()
    seen_paths: set[str] = set()
    seen_folders: set[tuple[int, int]] = set()

    def add(path: str, named: bool = False) -> None:
        key = os.path.normpath(path)
        if key in seen_paths and not named:
            out.skipped["found twice"] += 1
        else:
            seen_paths.add(key)
            out.paths.append(path)

    def expand(item: str, from_list: bool) -> None:
        if os.path.isdir(item):
            for path in _walk(item, out, seen_folders):
                add(path)
        elif os.path.lexists(item) or from_list:
            add(item, named=True)
        elif "**" in item:  # walked by `_walk`, which follows a symlink loop once (glob follows it 40 deep)
            root = item[:item.index("**")].rpartition("/")[0] or "."
            if GLOB_CHARACTERS.isdisjoint(root) and os.path.isdir(root):
                pattern = _pattern(item if root != "." or item.startswith("./") else "./" + item)
                matches = list(_walk(root, out, seen_folders, pattern))
            else:
                matches = []
            if not matches:
                raise InputError(f"no file matches {item}")
            for path in matches:
                add(path)
        elif not GLOB_CHARACTERS.isdisjoint(item):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"no file matches {item}")
            for match in matches:
                if os.path.isdir(match):
                    expand(match, False)
                elif _hidden(os.path.basename(match)):
                    out.skipped["hidden"] += 1
                elif not is_image_file(match):
                    out.skipped["not an image"] += 1
                else:
                    add(match)
        else:
            raise InputError(f"cannot read image {item}: file not found")

    for item in inputs:
        expand(os.fspath(item), False)
    if files_from is not None:
        for line in _lines(files_from):
            expand(line, True)
    return out

