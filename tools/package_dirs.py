"""The repository's package-to-folder mapping, read from setup.cfg's ``package_dir`` (the one place it is
written): ``alphanet_zoo.export`` lives in ``export/`` and ``alphanet_zoo.eval`` in ``eval/``. Tests,
mutation testing and static checks read it here instead of carrying a table of their own."""
from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def package_dirs(repo: Path = REPO) -> dict[str, Path]:
    """Installed package name -> source folder, longest names first (the most specific mapping wins)."""
    parser = configparser.ConfigParser()
    parser.read(repo / "setup.cfg", encoding="utf-8")
    mapping = {}
    for line in parser["options"]["package_dir"].strip().splitlines():
        package, _, folder = (part.strip() for part in line.partition("="))
        mapping[package] = repo / folder
    return dict(sorted(mapping.items(), key=lambda item: -len(item[0])))


def module_files(repo: Path = REPO) -> dict[str, Path]:
    """Every module of the installed package, by dotted name, with its source file."""
    dirs = package_dirs(repo)
    found: dict[str, Path] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            name = ".".join([package, *parts])
            # a folder mapped to a more specific package is not also part of its parent's tree
            if any(other != package and other.startswith(package + ".") and (name + ".").startswith(other + ".")
                   for other in dirs):
                continue
            found.setdefault(name, path)
    return found
