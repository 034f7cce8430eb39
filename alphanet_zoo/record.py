"""`ModelRecord`: the one metadata record of a set of weights (timm's ``PretrainedCfg``, torchvision's ``meta``).

It says what a model is (name, architecture, classes and their labels, preprocessing), what is known
of its accuracy (the paper's numbers for the architecture; numbers measured on these weights, with
what they were measured on), how its BatchNorm statistics were made (``calibration``; None: not
calibrated), its license, where the weights came from (``origin``, one of `Origin`; ``source`` says
it in words). It is written verbatim as a folder's ``config.json``, as the ``config`` entry of an
exported file's metadata, and as the ``model`` entry of every evaluation record;
`ModelRecord.from_dict` validates all of it when it is read back (`schema.from_dict`).

The keys in `DERIVED_KEYS` (MFLOPs, parameters, the paper's numbers, ...) follow from the other
fields. They are written for readers, listed under ``derived``, recomputed on read and checked:
a file whose derived keys disagree with its architecture is refused. Records of format
``alphanet_zoo.model/2`` (and alphanet_zoo 0.1's config.json) are upgraded when read.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ._version import __version__
from .config import ArchConfig
from .errors import InputError, InputTypeError
from .flops import count_flops, count_params
from .imagenet import NUM_CLASSES, class_names
from .preprocessing import Preprocessing
from .registry import MODELS, PAPER, PAPER_URL, WEIGHTS_LICENSE, name_of
from .schema import check, from_dict, read_fields, shown

RECORD_FORMAT = "alphanet_zoo.model/3"
FORMAT_2 = "alphanet_zoo.model/2"
LIBRARY_NAME = "alphanet_zoo"
IMAGENET_LABELS = "imagenet-1k"
CALIBRATION_RECIPE = ("official: running statistics reset, cumulative average (momentum None), seeded batches "
                      "of training images (random resized crop, horizontal flip, normalise, bicubic resize to "
                      "the model's resolution) forwarded in train mode without gradients")
#: Keys of the JSON form computed from the other fields: written for readers, checked on read.
DERIVED_KEYS = ("official_name", "mflops", "params", "published", "calibrated")
_ENVELOPE_KEYS = ("format", "library", "derived")
_POSITIVE = (1, 2 ** 62)


class Origin(enum.StrEnum):
    """Where a model's weights came from (a record's ``origin``; its ``source`` says it in words)."""

    RANDOM = "random"  # a fresh random initialisation: untrained, nobody's work, no license
    EXTRACTED = "extracted"  # sliced out of a supernet; BatchNorm calibrated or not (``calibration``)
    TRAINED = "trained"  # trained from scratch with this package
    FINETUNED = "finetuned"  # other weights, fine-tuned
    FILE = "file"  # a weights file that carried no record


_DEFAULT_SOURCE = {Origin.RANDOM: "random initialisation (untrained)", Origin.EXTRACTED: "extracted from a supernet",
                   Origin.TRAINED: "trained with alphanet_zoo", Origin.FINETUNED: "fine-tuned with alphanet_zoo",
                   Origin.FILE: "a weights file without a record"}


def _library_version() -> str:
    return __version__


@dataclass(frozen=True)
class Calibration:
    """How BatchNorm statistics were re-estimated after extraction (`alphanet_zoo.calibrate_bn`)."""

    data: str  # the training images' folder (its name)
    num_batches: int = field(metadata={"range": _POSITIVE})
    batch_size: int = field(metadata={"range": _POSITIVE})
    seed: int = field(metadata={"range": (-2 ** 63, 2 ** 63)})
    crop_size: int = field(default=224, metadata={"range": (1, 4096)})
    recipe: str = CALIBRATION_RECIPE

    @classmethod
    def from_dict(cls, data: Any, key: str = "calibration") -> "Calibration":
        return from_dict(cls, data, key)


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

    top1: float = field(metadata={"range": (0, 100)})
    top5: float | None = field(metadata={"range": (0, 100)})
    images: int = field(metadata={"range": _POSITIVE})
    data: str  # the evaluation images (folder name, split)
    calibrated: bool = False  # BatchNorm re-calibrated before measuring
    library_version: str = ""

    @classmethod
    def from_dict(cls, data: Any, key: str) -> "Measurement":
        return from_dict(cls, data, key)


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
    arch: ArchConfig = field(metadata={"key": "architecture"})
    num_classes: int = field(metadata={"range": (0, 1_000_000)})  # 0: no classifier (an embedding)
    labels: tuple[str, ...] | None  # class names by output index (None: unknown)
    label_set: str | None  # "imagenet-1k": outputs are the canonical ImageNet-1k classes
    preprocessing: Preprocessing
    published: Published | None = field(metadata={"derived": True})
    measured: tuple[Measurement, ...]
    calibration: Calibration | None
    license: str | None  # None: randomly initialised weights, nobody's work
    source: str  # where the weights came from, in words
    origin: Origin  # where the weights came from, as one of a few kinds
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
    def needs_calibration(self) -> bool:
        """Extracted from a supernet and not BatchNorm-calibrated: far below what the architecture reaches."""
        return self.origin is Origin.EXTRACTED and not self.calibrated

    @property
    def official_name(self) -> str | None:
        registry_name = name_of(self.arch)
        return MODELS[registry_name].official_name if registry_name and self.published else None

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def create(cls, arch: ArchConfig, num_classes: int = NUM_CLASSES, *, name: str | None = None,
               origin: Origin = Origin.RANDOM, source: str | None = None, license: str | None = None,
               calibration: Calibration | None = None, labels: Sequence[str] | None = None,
               measured: Sequence[Measurement] = ()) -> "ModelRecord":
        """A record for ``arch``: the registry's name and paper numbers when it is a published model,
        ImageNet labels for a 1000-class head, the evaluation preprocessing of its resolution.

        ``source`` defaults to a description of ``origin``; ``license`` to the AlphaNet weights'
        license, except for random weights, which have none.
        """
        origin = Origin(origin)
        name = name if name is not None else name_of(arch)
        imagenet = num_classes == NUM_CLASSES and labels is None
        if license is None and origin is not Origin.RANDOM:
            license = WEIGHTS_LICENSE
        return cls(name=name, arch=arch, num_classes=num_classes,
                   labels=tuple(class_names()) if imagenet else (tuple(labels) if labels is not None else None),
                   label_set=IMAGENET_LABELS if imagenet else None,
                   preprocessing=Preprocessing(resolution=arch.resolution),
                   published=published_for(arch, num_classes, name), measured=tuple(measured),
                   calibration=calibration, license=license, source=source or _DEFAULT_SOURCE[origin],
                   origin=origin)

    def with_head(self, num_classes: int, labels: Sequence[str] | None = None) -> "ModelRecord":
        """The record after the classifier was replaced by a fresh one for ``num_classes``."""
        fresh = ModelRecord.create(self.arch, num_classes, name=self.name if num_classes == self.num_classes else None,
                                   labels=labels, license=self.license, calibration=self.calibration,
                                   origin=self.origin,
                                   source=f"{self.source}; new {num_classes}-class classifier (untrained)")
        return dataclasses.replace(fresh, preprocessing=self.preprocessing)

    def with_resolution(self, resolution: int, preprocessing: Preprocessing | None = None) -> "ModelRecord":
        """The record of the same weights taking inputs of side ``resolution`` (a fine-tuning at another size):
        the architecture says it, ``preprocessing`` (default: the evaluation crop of that side) ends at it, and
        numbers measured or published at another resolution are dropped."""
        arch = dataclasses.replace(self.arch, resolution=resolution).validate(standalone=True)
        preprocessing = preprocessing or Preprocessing(resolution=resolution)
        if preprocessing.resolution != resolution:
            raise InputError(f"the preprocessing ends at {preprocessing.resolution}, not at resolution {resolution}")
        fresh = ModelRecord.create(arch, self.num_classes, name=self.name, labels=self.labels, license=self.license,
                                   calibration=self.calibration, origin=self.origin, source=self.source)
        return dataclasses.replace(fresh, label_set=self.label_set, preprocessing=preprocessing)

    def __post_init__(self) -> None:
        if not isinstance(self.origin, Origin):
            object.__setattr__(self, "origin", check(Origin, self.origin, "origin"))
        if self.labels is not None and len(self.labels) != self.num_classes:
            raise InputError(f"labels has {len(self.labels)} entries for {self.num_classes} classes")

    # ---- timm's vocabulary -----------------------------------------------------------------------
    def timm_cfg(self) -> dict[str, Any]:
        """The record as timm's ``pretrained_cfg`` dict: input size, crop, normalisation, layer names.

        timm's transform resizes to ``input_size / crop_pct`` and crops ``input_size``: the region
        and scale our preprocessing (crop 224 of 256, then resize) gives.
        """
        pre, side = self.preprocessing, self.arch.resolution
        for _ in range(5):  # five stride-2 layers, each giving ceil(side / 2)
            side = -(-side // 2)
        info = MODELS.get(self.name) if self.name else None
        return {
            "architecture": f"alphanet_{self.name}" if info else None,
            # timm lists a model with a Hub id as having weights: named once the registry pins published ones
            "hf_hub_id": info.weights.hub_repo if info and info.weights.revision else None,
            "url": "", "num_classes": self.num_classes,
            "input_size": (3, pre.resolution, pre.resolution), "pool_size": (side, side),
            "fixed_input_size": False, "crop_pct": pre.crop_size / pre.resize_size, "crop_mode": "center",
            "interpolation": pre.interpolation, "mean": tuple(pre.mean), "std": tuple(pre.std),
            "first_conv": "stem.conv", "classifier": "classifier", "license": self.license,
            "paper_ids": "arXiv:2102.07954", "origin_url": PAPER_URL,
        }

    def get(self, key: str, default: Any = None) -> Any:
        """timm's ``pretrained_cfg.get``: `timm_cfg`'s ``key`` (timm.data.resolve_data_config reads it)."""
        return self.timm_cfg().get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.timm_cfg()[key]

    def keys(self):
        """`timm_cfg`'s keys: with `__getitem__`, ``dict(model.pretrained_cfg)`` copies it as timm's scripts do."""
        return self.timm_cfg().keys()

    def __iter__(self):
        return iter(self.timm_cfg())

    def __contains__(self, key: object) -> bool:
        return key in self.timm_cfg()

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON form, key for key what `from_dict` reads (derived keys included for readers)."""
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
            "origin": self.origin.value,
            "source": self.source,
            "library": LIBRARY_NAME,
            "library_version": self.library_version,
            "derived": list(DERIVED_KEYS),
        }

    @classmethod
    def from_dict(cls, data: Any, what: str = "model record") -> "ModelRecord":
        """Validate and read a record (formats /3 and /2, and alphanet_zoo 0.1's config.json).

        Every field is checked; anything out of place is an `InputError` naming ``what`` and the key.
        """
        try:
            return _read(_upgraded(data))
        except InputError as e:
            raise InputError(f"{what}: {e}") from None


def _derived_values(record: ModelRecord) -> dict[str, Any]:
    """The derived keys of ``record``'s JSON form, as `ModelRecord.to_dict` writes them."""
    return {key: value for key, value in record.to_dict().items() if key in DERIVED_KEYS}


def _read(data: Any) -> ModelRecord:
    if not isinstance(data, Mapping):
        raise InputTypeError(f"the record must be a JSON object, got {shown(data)}")
    if data.get("format") != RECORD_FORMAT:
        raise InputError(f"format is {shown(data.get('format'))}, expected {RECORD_FORMAT!r} "
                         f"(written by another version of alphanet_zoo?)")
    if data.get("library", LIBRARY_NAME) != LIBRARY_NAME:
        raise InputError(f"library is {shown(data['library'])}, not {LIBRARY_NAME!r}: not a record of this package")
    derived = data.get("derived", [])
    if not isinstance(derived, list) or not set(derived) <= set(DERIVED_KEYS):
        raise InputError(f"derived must be a list of some of {', '.join(DERIVED_KEYS)}, got {shown(derived)}")
    body = {k: v for k, v in data.items() if k not in DERIVED_KEYS}
    for key, default in (("library_version", ""), ("measured", []), ("license", WEIGHTS_LICENSE)):
        body.setdefault(key, default)
    architecture = body.get("architecture")
    if "preprocessing" not in body and isinstance(architecture, Mapping):
        body["preprocessing"] = {"resolution": architecture.get("resolution")}
    fields = read_fields(ModelRecord, body, extra=_ENVELOPE_KEYS)
    arch, num_classes, labels, label_set = (fields[k] for k in ("arch", "num_classes", "labels", "label_set"))
    arch.validate(standalone=True)
    if labels is not None and len(labels) != num_classes:
        raise InputError(f"labels must be a list of {num_classes} strings or null")
    if label_set is not None and label_set != IMAGENET_LABELS:
        raise InputError(f"label_set must be {IMAGENET_LABELS!r} or null, got {shown(label_set)}")
    if label_set == IMAGENET_LABELS and num_classes != NUM_CLASSES:
        raise InputError(f"label_set {IMAGENET_LABELS} needs 1000 classes, not {num_classes}")
    record = ModelRecord(published=published_for(arch, num_classes, fields["name"]), **fields)
    _check_derived(data, record)
    return record


def _check_derived(data: Mapping[str, Any], record: ModelRecord) -> None:
    """Refuse derived keys that disagree with what the record's fields give: they are never trusted."""
    if "calibrated" in data and data["calibrated"] is not record.calibrated:
        raise InputError(f"calibrated is {shown(data['calibrated'])} but calibration is "
                         f"{'set' if record.calibration else 'null'}")
    for key, expected in _derived_values(record).items():
        if key not in data or key == "calibrated":
            continue
        value = data[key]
        if key == "mflops":  # written rounded to 4 decimals
            agrees = isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value - expected) <= 1e-4
        else:
            agrees = value == expected and type(value) is type(expected)
        if not agrees:
            raise InputError(f"{key} is {shown(value)} but the record's architecture and classes give "
                             f"{shown(expected)}; it is derived, not a fact to edit")


def _upgraded(data: Any) -> Any:
    """``data`` in today's format when it is a record of an earlier one (else as it is)."""
    if isinstance(data, Mapping) and data.get("format_version") == 1 and "format" not in data:
        data = _from_format_1(data)
    if isinstance(data, Mapping) and data.get("format") == FORMAT_2:
        data = _from_format_2(data)
    return _finetuned_resolution(data)


def _finetuned_resolution(data: Any) -> Any:
    """A fine-tuned record of alphanet_zoo 0.2 kept the starting architecture's resolution beside the
    preprocessing of the resolution it was trained at: the model's is the preprocessing's (its MFLOPs follow)."""
    if not isinstance(data, Mapping) or data.get("origin") != Origin.FINETUNED.value:
        return data
    architecture, preprocessing = data.get("architecture"), data.get("preprocessing")
    if not (isinstance(architecture, Mapping) and isinstance(preprocessing, Mapping)):
        return data
    side = preprocessing.get("resolution")
    if not isinstance(side, int) or isinstance(side, bool) or side == architecture.get("resolution"):
        return data
    upgraded = {k: v for k, v in data.items() if k != "mflops"}
    upgraded["architecture"] = {**architecture, "resolution": side}
    return upgraded


def _origin_of(source: Any, license: Any) -> Origin:
    """The origin of a format-2 record, which said it only in words."""
    text = source if isinstance(source, str) else ""
    if license == "random-init" or text.startswith("random initialisation"):
        return Origin.RANDOM
    if text.startswith("extracted from"):
        return Origin.EXTRACTED
    return Origin.FILE  # "weights file ...", "the file ... (no metadata)" or unknown


def _from_format_2(old: Mapping[str, Any]) -> dict[str, Any]:
    """A format-2 record in today's form: ``origin`` from its source text, no "random-init" license;
    its derived keys are dropped (format 2 never checked them)."""
    new = {k: v for k, v in old.items() if k not in ("official_name", "mflops", "params", "published")}
    new["format"] = RECORD_FORMAT
    new["origin"] = _origin_of(old.get("source"), old.get("license"))
    new["license"] = None if old.get("license") == "random-init" else old.get("license", WEIGHTS_LICENSE)
    new["source"] = old.get("source") or "unspecified"
    return new


def _from_format_1(old: Mapping[str, Any]) -> dict[str, Any]:
    """alphanet_zoo 0.1's config.json as a format-2 record (fields it did not have are left out)."""
    calibration = old.get("calibration")
    if isinstance(calibration, Mapping):
        calibration = {"data": str(calibration.get("data", "unknown")),
                       "num_batches": calibration.get("num_batches"), "batch_size": calibration.get("batch_size"),
                       "seed": calibration.get("seed")}
    metrics = old.get("metrics") if isinstance(old.get("metrics"), Mapping) else {}
    num_classes = old.get("num_classes")
    new = {"format": FORMAT_2, "name": old.get("name"), "architecture": old.get("architecture"),
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
