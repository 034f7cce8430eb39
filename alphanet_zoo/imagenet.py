"""The 1000 ImageNet-1k classes in canonical index order: synsets and human-readable names."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

NUM_CLASSES = 1000


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet class: its index, WordNet synset id and names (the first is the short name)."""

    index: int
    synset: str
    names: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.names[0]


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageNetClass, ...]:
    """All 1000 classes, index 0 to 999 (``n01440764`` tench first)."""
    text = resources.files("alphanet_zoo").joinpath("resources/imagenet1k_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    classes = tuple(ImageNetClass(int(i), synset, tuple(n.strip() for n in names.split(",")))
                    for i, synset, names in rows)
    if [c.index for c in classes] != list(range(NUM_CLASSES)):
        raise RuntimeError("the packaged ImageNet class table is damaged")
    return classes


def class_names() -> list[str]:
    """Short names, by index."""
    return [c.name for c in imagenet_classes()]


def synsets() -> list[str]:
    """WordNet synset ids (``n01440764``...), by index."""
    return [c.synset for c in imagenet_classes()]


@functools.lru_cache(maxsize=1)
def synset_to_index() -> dict[str, int]:
    return {c.synset: c.index for c in imagenet_classes()}
