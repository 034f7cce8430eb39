"""Reading labelled image folders: ImageNet's layouts, and plain class folders.

ImageNet layouts (`open_dataset` tells them apart):

- synset folders, ``DIR/n01440764/*.JPEG``: the class index is always the canonical one
  (`alphanet_zoo.imagenet.synset_to_index`), whichever of the 1000 folders are present, missing or
  empty, so a subset of ImageNet is labelled as the 1000-class classifier expects. A folder that is
  not a synset is an error. Images are found recursively inside a class folder.
- a flat folder of validation images plus a ground-truth file (`ground_truth`).

Class folders (`class_folder_samples`), for any other classifier: ``DIR/<class>/...`` numbered in
sorted folder order, as torchvision's ``ImageFolder`` numbers them. `labelled_samples` picks the
reading a classifier's head needs. The order of samples is always fixed (class, then path; or file
name for the flat layout).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..imagenet import NUM_CLASSES, synset_to_index
from .ground_truth import GROUND_TRUTH_FILES, read_ground_truth
from .images import IMAGE_EXTENSIONS, DatasetError, is_image_file

SYNSET_FOLDERS, GROUND_TRUTH_FILE, CLASS_FOLDERS = "synset_folders", "ground_truth_file", "class_folders"


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image: its file and class index (compact: a training folder has 1.28M)."""

    path: str
    target: int


def _image_files(folder: Path) -> list[str]:
    files = []
    for root, dirs, names in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files.extend(os.path.join(root, n) for n in names if is_image_file(n) and not n.startswith("."))
    return sorted(files)


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise DatasetError(f"image folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not an image folder")


def _class_folders(root: Path) -> list[Path]:
    return sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")), key=lambda d: d.name)


def synset_folder_samples(root: str | os.PathLike) -> list[Sample]:
    """Samples of a ``root/<synset>/...`` tree, in canonical class order, then by path."""
    root = Path(root)
    _check_folder(root)
    index = synset_to_index()
    folders = _class_folders(root)
    unknown = [d.name for d in folders if d.name not in index]
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise DatasetError(f"{root}: folder name{'s' if len(unknown) > 1 else ''} {shown} "
                           f"{'are' if len(unknown) > 1 else 'is'} not an ImageNet-1k synset id (like n01440764); "
                           "an ImageNet folder holds one folder per class named by its synset")
    samples = []
    for folder in sorted(folders, key=lambda d: index[d.name]):
        samples.extend(Sample(p, index[folder.name]) for p in _image_files(folder))
    return samples


def class_folder_samples(root: str | os.PathLike,
                         classes: Sequence[str] | None = None) -> tuple[list[Sample], list[str]]:
    """Samples of a ``root/<class>/...`` tree numbered in sorted folder order (torchvision's
    ``ImageFolder``), and the class names. With ``classes`` (the training classes, say), every folder
    must be one of them and is numbered by its place in ``classes``; some may be absent."""
    root = Path(root)
    _check_folder(root)
    names = [d.name for d in _class_folders(root)]
    if classes is None:
        classes = names
    index = {name: i for i, name in enumerate(classes)}
    extra = [name for name in names if name not in index]
    if extra:
        expected = ", ".join(list(classes)[:5]) + (" ..." if len(classes) > 5 else "")
        shown = ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise DatasetError(f"the class folders of {root} are not the model's classes: {shown} "
                           f"(expected folders among {expected})")
    samples = []
    for name in sorted(names, key=index.__getitem__):
        samples.extend(Sample(p, index[name]) for p in _image_files(root / name))
    return samples, list(classes)


def ground_truth_samples(root: str | os.PathLike, ground_truth: str | os.PathLike,
                         label_map: str | os.PathLike | None = None) -> list[Sample]:
    """Samples of a flat folder of validation images labelled by a ground-truth file, by file name.

    Every image in the folder must be in the ground truth; images the ground truth lists but the
    folder lacks are simply not evaluated (a subset is fine).
    """
    root = Path(root)
    labels = read_ground_truth(ground_truth, label_map)
    samples = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith(".")):
        if path.stem not in labels:
            raise DatasetError(f"image {path} is not listed in {ground_truth}; "
                               "the folder must hold only the validation images it labels")
        samples.append(Sample(str(path), labels[path.stem]))
    return samples


def find_ground_truth(root: str | os.PathLike) -> Path | None:
    """The ground-truth file inside ``root``, if any (``LOC_val_solution.csv`` first)."""
    for name in GROUND_TRUTH_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    return None


def open_dataset(root: str | os.PathLike, ground_truth: str | os.PathLike | None = None,
                 label_map: str | os.PathLike | None = None) -> tuple[list[Sample], str]:
    """The samples of an ImageNet folder and its layout (``synset_folders`` or ``ground_truth_file``).

    A folder with images at its top is the flat layout (its ground-truth file given, or found in
    it); otherwise its sub-folders are synset folders. An empty dataset is an error.
    """
    root = Path(root)
    _check_folder(root)
    flat_images = any(p.is_file() and is_image_file(p) and not p.name.startswith(".") for p in root.iterdir())
    if ground_truth is None and flat_images:
        ground_truth = find_ground_truth(root)
        if ground_truth is None:
            raise DatasetError(f"{root} holds images but no ground-truth file ({' or '.join(GROUND_TRUTH_FILES)}); "
                               "give one with --ground-truth, or lay the images out in synset folders")
    if ground_truth is not None:
        samples, layout = ground_truth_samples(root, ground_truth, label_map), GROUND_TRUTH_FILE
    else:
        samples, layout = synset_folder_samples(root), SYNSET_FOLDERS
    if not samples:
        raise DatasetError(f"no images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)} files "
                           "in synset folders like n01440764/, or beside a ground-truth file)")
    return samples, layout


def is_imagenet_folder(root: str | os.PathLike) -> bool:
    """True if ``root`` has class folders and every one is named by an ImageNet-1k synset."""
    root = Path(root)
    if not root.is_dir():
        return False
    index = synset_to_index()
    folders = _class_folders(root)
    return bool(folders) and all(d.name in index for d in folders)


def labelled_samples(root: str | os.PathLike, num_classes: int = NUM_CLASSES, classes: Sequence[str] | None = None,
                     ground_truth: str | os.PathLike | None = None,
                     label_map: str | os.PathLike | None = None) -> tuple[list[Sample], str]:
    """The samples of ``root`` labelled for a classifier with ``num_classes`` outputs, and the layout.

    A 1000-class classifier reads the folder as ImageNet (canonical indices, also for a subset of the
    classes); any other as class folders, in sorted order or in the order of ``classes``. An empty
    dataset, or a label outside the classifier's outputs, is a `DatasetError`.
    """
    if num_classes == NUM_CLASSES and classes is None:
        return open_dataset(root, ground_truth, label_map)
    samples, names = class_folder_samples(root, classes)
    if not samples:
        raise DatasetError(f"no images found in the class folders of {root}")
    if len(names) > num_classes:
        raise DatasetError(f"{root} has {len(names)} class folders but the model has {num_classes} classes")
    return samples, CLASS_FOLDERS
