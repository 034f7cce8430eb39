"""Labels of a flat folder of ImageNet validation images, from the official ground-truth files.

Two files are understood:

- ``LOC_val_solution.csv`` (the ILSVRC localisation challenge on Kaggle): a header
  ``ImageId,PredictionString``, then one row per image; the first token of the prediction string
  is the image's synset (``n01751748 58 0 499 359 ...``). Self-contained.
- ``ILSVRC2012_validation_ground_truth.txt`` (the ILSVRC2012 devkit): line ``k`` holds the label of
  ``ILSVRC2012_val_%08d.JPEG % k``, a 1-based ``ILSVRC2012_ID``. Those ids are the devkit's own class
  order (``meta.mat``: 1 is n02119789 kit fox, 2 n02100735 English setter, ...), which is *not* the
  sorted-synset order the models' 1000 outputs use (0 is n01440764 tench). The id -> synset table is
  read from the devkit itself: ``data/meta.mat`` (struct ``synsets``, fields ``ILSVRC2012_ID`` and
  ``WNID``), or a text table ``map_clsloc.txt`` (``n02119789 1 kit_fox`` per line, shipped with the
  later ILSVRC devkits). This package carries no copy of that table.

Every label ends as an index in the canonical order of `alphanet_zoo.imagenet.synset_to_index`.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from ..errors import InputError
from ..imagenet import NUM_CLASSES, synset_to_index
from .matfile import load_mat

LOC_SOLUTION = "LOC_val_solution.csv"
DEVKIT_GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
GROUND_TRUTH_FILES = (LOC_SOLUTION, DEVKIT_GROUND_TRUTH)
DEVKIT_MAPPING_FILES = ("meta.mat", "map_clsloc.txt")


#: Larger ground-truth or mapping files are refused (LOC_val_solution.csv is about 8 MB).
MAX_TEXT_BYTES = 256 << 20


class GroundTruthError(InputError):
    """A ground-truth or class-mapping file that cannot be used."""


def _check_size(path: Path) -> None:
    if path.stat().st_size > MAX_TEXT_BYTES:
        raise GroundTruthError(f"{path} is larger than {MAX_TEXT_BYTES >> 20} MiB; not a ground-truth or mapping file")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GroundTruthError(f"cannot read {path} as UTF-8 text: {e}") from None


def canonical_index(synset: str, where: str) -> int:
    """The model output index of ``synset``; ``where`` names the source in the error."""
    try:
        return synset_to_index()[synset]
    except KeyError:
        raise GroundTruthError(f"{where}: {synset!r} is not one of the 1000 ImageNet-1k synsets") from None


def read_loc_solution(path: str | os.PathLike) -> dict[str, int]:
    """``LOC_val_solution.csv`` -> {image id (file stem): canonical class index}."""
    path = Path(path)
    labels: dict[str, int] = {}
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise GroundTruthError(f"{path}: expected the header 'ImageId,PredictionString', got {header}")
        for line, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].split():
                raise GroundTruthError(f"{path}, line {line}: expected 'ImageId,synset ...', got {','.join(row)!r}")
            image_id, synset = row[0].strip(), row[1].split()[0]
            if image_id in labels:
                raise GroundTruthError(f"{path}, line {line}: image {image_id} is listed twice")
            labels[image_id] = canonical_index(synset, f"{path}, line {line}")
    except csv.Error as e:
        raise GroundTruthError(f"{path} is not a readable CSV file: {e}") from None
    if not labels:
        raise GroundTruthError(f"{path} lists no images")
    return labels


def read_devkit_mapping(path: str | os.PathLike) -> dict[int, int]:
    """The devkit's class table -> {ILSVRC2012_ID (1-based): canonical class index}.

    ``path`` is the devkit's ``meta.mat`` or a ``map_clsloc.txt``-style text table
    (``WNID ILSVRC2012_ID [name]`` per line).
    """
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"class mapping file not found: {path}")
    _check_size(path)
    pairs = _mat_pairs(path) if path.suffix.lower() == ".mat" else _text_pairs(path)
    mapping: dict[int, int] = {}
    for ilsvrc_id, synset in pairs:
        if not 1 <= ilsvrc_id <= NUM_CLASSES:
            continue  # meta.mat also lists the inner nodes of the hierarchy (ids above 1000)
        if ilsvrc_id in mapping:
            raise GroundTruthError(f"{path}: ILSVRC2012_ID {ilsvrc_id} appears twice")
        mapping[ilsvrc_id] = canonical_index(synset, str(path))
    if len(set(mapping.values())) != len(mapping):
        raise GroundTruthError(f"{path}: two ILSVRC2012_IDs map to the same synset")
    if not mapping:
        raise GroundTruthError(f"{path} holds no ILSVRC2012_ID -> synset entries")
    return mapping


def _mat_pairs(path: Path) -> list[tuple[int, str]]:
    synsets = load_mat(path).get("synsets")
    if not isinstance(synsets, list) or not synsets or not isinstance(synsets[0], dict) \
            or not {"ILSVRC2012_ID", "WNID"} <= synsets[0].keys():
        raise GroundTruthError(f"{path} has no 'synsets' struct with ILSVRC2012_ID and WNID "
                               "(is it the ILSVRC2012 devkit's data/meta.mat?)")
    try:
        return [(int(s["ILSVRC2012_ID"]), str(s["WNID"]).strip()) for s in synsets]
    except (TypeError, ValueError):
        raise GroundTruthError(f"{path}: the synsets' ILSVRC2012_ID fields are not numbers") from None


def _text_pairs(path: Path) -> list[tuple[int, str]]:
    pairs = []
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].isdigit():
            raise GroundTruthError(f"{path}, line {line_no}: expected 'WNID ILSVRC2012_ID [name]' "
                                   f"(as in map_clsloc.txt), got {line.strip()!r}")
        pairs.append((int(parts[1]), parts[0]))
    return pairs


def find_devkit_mapping(ground_truth: str | os.PathLike) -> Path | None:
    """``meta.mat`` or ``map_clsloc.txt`` beside a devkit ground-truth file (the devkit's ``data/``), if any."""
    folder = Path(ground_truth).parent
    for name in DEVKIT_MAPPING_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def read_devkit_ground_truth(path: str | os.PathLike, mapping: dict[int, int]) -> dict[str, int]:
    """``ILSVRC2012_validation_ground_truth.txt`` -> {``ILSVRC2012_val_%08d``: canonical class index}."""
    path = Path(path)
    labels: dict[str, int] = {}
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit():
            raise GroundTruthError(f"{path}, line {line_no}: expected a class id, got {text!r}")
        ilsvrc_id = int(text)
        if ilsvrc_id not in mapping:
            raise GroundTruthError(f"{path}, line {line_no}: class id {ilsvrc_id} is not in the class "
                                   f"mapping (ILSVRC2012_IDs run from 1 to {NUM_CLASSES})")
        labels[f"ILSVRC2012_val_{line_no:08d}"] = mapping[ilsvrc_id]
    if not labels:
        raise GroundTruthError(f"{path} lists no labels")
    return labels


def read_ground_truth(path: str | os.PathLike, mapping: str | os.PathLike | None = None) -> dict[str, int]:
    """Either ground-truth file -> {image id (file stem): canonical class index}.

    ``mapping`` (the devkit's ``meta.mat`` or ``map_clsloc.txt``) is needed for the devkit's
    ``.txt``; when None it is looked up beside the ``.txt``. It is ignored for the ``.csv``.
    """
    path = Path(path)
    if not path.is_file():
        raise GroundTruthError(f"ground-truth file not found: {path}")
    _check_size(path)
    if path.suffix.lower() == ".csv":
        return read_loc_solution(path)
    mapping_path = Path(mapping) if mapping is not None else find_devkit_mapping(path)
    if mapping_path is None:
        raise GroundTruthError(
            f"{path} numbers classes by the devkit's ILSVRC2012_ID, which is not the models' class order; "
            f"give the devkit's data/meta.mat or a map_clsloc.txt with --label-map (or put it beside "
            f"{path.name}), or use {LOC_SOLUTION} instead")
    return read_devkit_ground_truth(path, read_devkit_mapping(mapping_path))
