"""`ModelRecord`: the one metadata record of a set of weights (timm's ``PretrainedCfg``, torchvision's ``meta``).

It says what a model is (name, architecture, classes and their labels, preprocessing), what is known
of its accuracy (the paper's numbers for the architecture; numbers measured on these weights, with
what they were measured on), how its BatchNorm statistics were made (``calibration``; None: not
calibrated), its license and where the weights came from. It is written verbatim as a folder's
``config.json``, as the ``config`` entry of an exported file's metadata, and as the ``model`` entry
of every evaluation record; `ModelRecord.from_dict` validates all of it when it is read back.

MFLOPs and parameters are derived from the architecture (and written out for readers' convenience).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ._version import __version__
from .config import ArchConfig
from .errors import InputError
from .flops import count_flops, count_params
from .imagenet import NUM_CLASSES, class_names
from .preprocessing import Preprocessing
from .registry import MODELS, PAPER, WEIGHTS_LICENSE, name_of

RECORD_FORMAT = "alphanet_zoo.model/2"
LIBRARY_NAME = "alphanet_zoo"
IMAGENET_LABELS = "imagenet-1k"
RANDOM_INIT = "random-init"  # the "license" of untrained weights: nobody's work
CALIBRATION_RECIPE = ("official: running statistics reset, cumulative average (momentum None), seeded batches "
                      "of training images (random resized crop, horizontal flip, normalise, bicubic resize to "
                      "the model's resolution) forwarded in train mode without gradients")
MAX_TEXT = 2000  # longest free-text field accepted from a file


def _library_version() -> str:
    return __version__


def _text(value: Any, key: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise InputError(f"{key} must be a string{' or null' if optional else ''} of at most {MAX_TEXT} "
                         f"characters, got {_shown(value)}")
    return value


def _integer(value: Any, key: str, low: int = 0, high: int = 2 ** 62) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{key} must be an integer from {low} to {high}, got {_shown(value)}")
    return value


def _number(value: Any, key: str, low: float = -math.inf, high: float = math.inf,
            optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise InputError(f"{key} must be a number from {low:g} to {high:g}{' or null' if optional else ''}, "
                         f"got {_shown(value)}")
    return float(value)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _mapping(value: Any, key: str, keys: Sequence[str], required: Sequence[str] = ()) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"{key} must be a JSON object, got {_shown(value)}")
    unknown = sorted(set(value) - set(keys))
    if unknown:
        raise InputError(f"{key} has an unknown key {unknown[0]!r}; known: {', '.join(keys)}")
    missing = [k for k in required if k not in value]
    if missing:
        raise InputError(f"{key} lacks {', '.join(missing)}")
    return value


@dataclass(frozen=True)
class Calibration:
    """How BatchNorm statistics were re-estimated after extraction (`alphanet_zoo.calibrate_bn`)."""

    data: str  # the training images' folder (its name)
    num_batches: int
    batch_size: int
    seed: int
    crop_size: int = 224
    recipe: str = CALIBRATION_RECIPE

    @classmethod
    def from_dict(cls, data: Any, key: str = "calibration") -> "Calibration":
        names = [f.name for f in dataclasses.fields(cls)]
        d = _mapping(data, key, names, ("data", "num_batches", "batch_size", "seed"))
        return cls(data=_text(d["data"], f"{key}.data"),
                   num_batches=_integer(d["num_batches"], f"{key}.num_batches", 1),
                   batch_size=_integer(d["batch_size"], f"{key}.batch_size", 1),
                   seed=_integer(d["seed"], f"{key}.seed", -2 ** 63, 2 ** 63),
                   crop_size=_integer(d.get("crop_size", 224), f"{key}.crop_size", 1, 4096),
                   recipe=_text(d.get("recipe", CALIBRATION_RECIPE), f"{key}.recipe"))


@dataclass(frozen=True)
class Published:
    """What the paper reports for an architecture (not measured on any particular weights)."""

    top1: float | None
    top5: float | None
    mflops: float | None
    source: str = PAPER


@dataclass(frozen=True)
class Measurement:
    """Accuracy measured on these very weights, and what it was measured on."""

    top1: float
    top5: float | None
    images: int
    data: str  # the evaluation images (folder name, split)
    calibrated: bool  # BatchNorm re-calibrated before measuring
    library_version: str = ""

    @classmethod
    def from_dict(cls, data: Any, key: str) -> "Measurement":
        names = [f.name for f in dataclasses.fields(cls)]
        d = _mapping(data, key, names, ("top1", "images", "data"))
        calibrated = d.get("calibrated", False)
        if not isinstance(calibrated, bool):
            raise InputError(f"{key}.calibrated must be true or false, got {_shown(calibrated)}")
        return cls(top1=_number(d["top1"], f"{key}.top1", 0, 100),
                   top5=_number(d.get("top5"), f"{key}.top5", 0, 100, optional=True),
                   images=_integer(d["images"], f"{key}.images", 1), data=_text(d["data"], f"{key}.data"),
                   calibrated=calibrated,
                   library_version=_text(d.get("library_version", ""), f"{key}.library_version"))


def published_for(arch: ArchConfig, num_classes: int, name: str | None = None) -> Published | None:
    """The paper's numbers when ``arch`` is a published architecture with its 1000-class head."""
    registry_name = name_of(arch)
    if registry_name is None or num_classes != NUM_CLASSES or (name is not None and name != registry_name):
        return None
    info = MODELS[registry_name]
    return Published(info.published_top1, info.published_top5, info.published_mflops)


@dataclass(frozen=True)
class ModelRecord:
    """Everything known about a model's weights. Build one with `ModelRecord.create`."""

    name: str | None
    arch: ArchConfig
    num_classes: int
    labels: tuple[str, ...] | None  # class names by output index (None: unknown)
    label_set: str | None  # "imagenet-1k": outputs are the canonical ImageNet-1k classes
    preprocessing: Preprocessing
    published: Published | None
    measured: tuple[Measurement, ...]
    calibration: Calibration | None
    license: str
    source: str  # where the weights came from
    library_version: str = field(default_factory=_library_version)

    # ---- derived facts ----------------------------------------------------------------------
    @property
    def mflops(self) -> float:
        return count_flops(self.arch, self.num_classes)

    @property
    def params(self) -> int:
        return count_params(self.arch, self.num_classes)

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    @property
    def official_name(self) -> str | None:
        registry_name = name_of(self.arch)
        return MODELS[registry_name].official_name if registry_name and self.published else None

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, arch: ArchConfig, num_classes: int = NUM_CLASSES, *, name: str | None = None,
               source: str = "random initialisation (untrained)", license: str | None = None,
               calibration: Calibration | None = None, labels: Sequence[str] | None = None,
               measured: Sequence[Measurement] = ()) -> "ModelRecord":
        """A record for ``arch``: the registry's name and paper numbers when it is a published model,
        ImageNet labels for a 1000-class head, the evaluation preprocessing of its resolution."""
        name = name if name is not None else name_of(arch)
        imagenet = num_classes == NUM_CLASSES and labels is None
        return cls(name=name, arch=arch, num_classes=num_classes,
                   labels=tuple(class_names()) if imagenet else (tuple(labels) if labels is not None else None),
                   label_set=IMAGENET_LABELS if imagenet else None,
                   preprocessing=Preprocessing(resolution=arch.resolution),
                   published=published_for(arch, num_classes, name), measured=tuple(measured),
                   calibration=calibration, license=license or WEIGHTS_LICENSE, source=source)

    def with_head(self, num_classes: int, labels: Sequence[str] | None = None) -> "ModelRecord":
        """The record after the classifier was replaced by a fresh one for ``num_classes``."""
        fresh = ModelRecord.create(self.arch, num_classes, name=self.name if num_classes == self.num_classes else None,
                                   labels=labels, license=self.license, calibration=self.calibration,
                                   source=f"{self.source}; new {num_classes}-class classifier (untrained)")
        return dataclasses.replace(fresh, preprocessing=self.preprocessing)

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise InputError(f"labels has {len(self.labels)} entries for {self.num_classes} classes")

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form, key for key what `from_dict` reads (derived facts included for readers)."""
        return {
            "format": RECORD_FORMAT,
            "name": self.name,
            "official_name": self.official_name,
            "architecture": self.arch.to_dict(),
            "num_classes": self.num_classes,
            "label_set": self.label_set,
            "labels": list(self.labels) if self.labels is not None else None,
            "preprocessing": self.preprocessing.to_dict(),
            "mflops": round(self.mflops, 4),
            "params": self.params,
            "published": dataclasses.asdict(self.published) if self.published else None,
            "measured": [dataclasses.asdict(m) for m in self.measured],
            "calibrated": self.calibrated,
            "calibration": dataclasses.asdict(self.calibration) if self.calibration else None,
            "license": self.license,
            "source": self.source,
            "library": LIBRARY_NAME,
            "library_version": self.library_version,
        }

    @classmethod
    def from_dict(cls, data: Any, what: str = "model record") -> "ModelRecord":
        """Validate and read a record (also the format of alphanet_zoo 0.1's config.json).

        Every field is checked; anything out of place is an `InputError` naming ``what`` and the key.
        """
        if isinstance(data, Mapping) and data.get("format_version") == 1 and "format" not in data:
            data = _from_format_1(data)
        try:
            return _read(data)
        except InputError as e:
            raise InputError(f"{what}: {e}") from None


_KEYS = ("format", "name", "official_name", "architecture", "num_classes", "label_set", "labels", "preprocessing",
         "mflops", "params", "published", "measured", "calibrated", "calibration", "license", "source", "library",
         "library_version")


def _read(data: Any) -> ModelRecord:
    d = _mapping(data, "the record", _KEYS, ("format", "architecture", "num_classes"))
    if d["format"] != RECORD_FORMAT:
        raise InputError(f"format is {_shown(d['format'])}, expected {RECORD_FORMAT!r} "
                         f"(written by another version of alphanet_zoo?)")
    arch = ArchConfig.from_dict(d["architecture"]).validate()
    num_classes = _integer(d["num_classes"], "num_classes", 1, 1_000_000)
    name = _text(d.get("name"), "name", optional=True)
    labels = d.get("labels")
    if labels is not None:
        if not isinstance(labels, list) or len(labels) != num_classes:
            raise InputError(f"labels must be a list of {num_classes} strings or null")
        labels = tuple(_text(v, f"labels[{i}]") for i, v in enumerate(labels))
    label_set = _text(d.get("label_set"), "label_set", optional=True)
    if label_set is not None and label_set != IMAGENET_LABELS:
        raise InputError(f"label_set must be {IMAGENET_LABELS!r} or null, got {_shown(label_set)}")
    if label_set == IMAGENET_LABELS and num_classes != NUM_CLASSES:
        raise InputError(f"label_set {IMAGENET_LABELS} needs 1000 classes, not {num_classes}")
    preprocessing = Preprocessing.from_dict(d["preprocessing"]) if "preprocessing" in d \
        else Preprocessing(resolution=arch.resolution)
    if "published" in d and d["published"] is not None:
        _mapping(d["published"], "published", ("top1", "top5", "mflops", "source"))
        for key in ("top1", "top5", "mflops"):
            _number(d["published"].get(key), f"published.{key}", 0, 1e6, optional=True)
    measured = d.get("measured", [])
    if not isinstance(measured, list):
        raise InputError(f"measured must be a list, got {_shown(measured)}")
    calibration = d.get("calibration")
    calibration = Calibration.from_dict(calibration) if calibration is not None else None
    if "calibrated" in d and d["calibrated"] is not (calibration is not None):
        raise InputError(f"calibrated is {_shown(d['calibrated'])} but calibration is "
                         f"{'set' if calibration else 'null'}")
    for key in ("mflops", "params"):
        if key in d:
            _number(d[key], key, 0)
    for key in ("official_name", "library"):
        _text(d.get(key), key, optional=True)
    return ModelRecord(
        name=name, arch=arch, num_classes=num_classes, labels=labels, label_set=label_set,
        preprocessing=preprocessing, published=published_for(arch, num_classes, name),
        measured=tuple(Measurement.from_dict(m, f"measured[{i}]") for i, m in enumerate(measured)),
        calibration=calibration, license=_text(d.get("license", WEIGHTS_LICENSE), "license"),
        source=_text(d.get("source") or "unspecified", "source"),
        library_version=_text(d.get("library_version") or "", "library_version"))


def _from_format_1(old: Mapping[str, Any]) -> dict[str, Any]:
    """alphanet_zoo 0.1's config.json in today's form (fields it did not have are left out)."""
    calibration = old.get("calibration")
    if isinstance(calibration, Mapping):
        calibration = {"data": str(calibration.get("data", "unknown")),
                       "num_batches": calibration.get("num_batches"), "batch_size": calibration.get("batch_size"),
                       "seed": calibration.get("seed")}
    metrics = old.get("metrics") if isinstance(old.get("metrics"), Mapping) else {}
    num_classes = old.get("num_classes")
    new = {"format": RECORD_FORMAT, "name": old.get("name"), "architecture": old.get("architecture"),
           "num_classes": num_classes, "calibration": calibration, "license": old.get("license", WEIGHTS_LICENSE),
           "source": old.get("source"), "measured": []}
    if "preprocessing" in old:
        new["preprocessing"] = old["preprocessing"]
    if num_classes == NUM_CLASSES and old.get("labels") == IMAGENET_LABELS:
        new["label_set"], new["labels"] = IMAGENET_LABELS, class_names()
    measured = metrics.get("imagenet")
    if isinstance(measured, Mapping) and measured.get("top1") is not None:
        new["measured"] = [{"top1": measured.get("top1"), "top5": measured.get("top5"),
                            "images": measured.get("images", 50000), "data": "imagenet-1k validation",
                            "calibrated": calibration is not None}]
    return new
