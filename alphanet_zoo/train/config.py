"""The training recipe as typed, nested dataclasses, read from YAML with ``key=value`` overrides.

``load_config("recipe.yaml", ["optim.lr_per_256=0.2", "epochs=10"])`` reads the file, applies the
overrides (values parsed as YAML: numbers, booleans, lists, ``null``) and checks every key and
type, naming the offending key. ``default`` names the bundled recipes (`BUNDLED_CONFIGS`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError
from .precision import check_precision

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: Recipes shipped with the package, by name: ``--config alphanet_imagenet``.
BUNDLED_CONFIGS = {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}
MAX_COLLECTIVE_TIMEOUT_S = 86400.0
#: keys of configs written before `TrainConfig.precision`, still read (`upgrade_precision_keys`)
LEGACY_PRECISION_KEYS = ("amp", "amp_dtype")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass
class DataConfig:
    """Where the images are and how they are fed."""

    train: str = ""  # class folders: one sub-folder of images per class (ImageNet: synset folders)
    val: str | None = None  # validation images, labelled as `train` is (alphanet_zoo.data.labelled_samples)
    num_classes: int | None = None  # None: the number of class folders; 1000 on synset folders: ImageNet's labels
    batch_size: int = 32  # per process
    workers: int = 8  # loader processes per training process
    crop_size: int = 224  # side of the random resized crop
    crop_scale: tuple[float, float] = (0.08, 1.0)
    interpolation: str = "bicubic"
    auto_augment: str | None = "v0"  # TensorFlow's ImageNet policy v0; None: off
    multi_resolution: bool = True  # resize each batch to every subnet's resolution (bicubic)


@dataclass
class SandwichConfig:
    """The sandwich rule and its losses."""

    num_archs: int = 4  # largest + (num_archs - 2) random + smallest
    label_smoothing: float = 0.1
    alpha_min: float = -1.0
    alpha_max: float = 1.0
    iw_clip: float = 5.0
    dropout: float = 0.2  # largest subnet only
    drop_connect: float = 0.2  # largest subnet only; last two stages, growing with block index


@dataclass
class OptimConfig:
    """SGD, weight decay, clipping and the learning-rate schedule."""

    lr_per_256: float = 0.1  # scaled by the global batch (processes x batch_size) / 256
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-5  # none on BatchNorm parameters and biases
    grad_clip_value: float | None = 1.0
    warmup_epochs: float = 5.0
    warmup_start_lr: float = 0.0
    min_lr: float = 0.0


@dataclass
class ValidationConfig:
    """Periodic accuracy of the smallest and largest subnets after BatchNorm calibration."""

    every_epochs: int = 10  # 0: only at the end
    calib_batches: int = 64  # batches of training images (evaluation transform) for BN calibration
    calib_batch_size: int = 256
    batch_size: int = 256
    max_images: int | None = None  # cap on validation images (None: all)


@dataclass
class TrainConfig:
    """Everything `alphanet-train` needs; the defaults are the paper's recipe (docs/design.md)."""

    output_dir: str = "outputs/alphanet_train"
    epochs: int = 360
    seed: int = 0
    init: str | None = None  # supernet checkpoint to start from (fine-tuning); None: random init
    device: str = "auto"  # auto: cuda:<LOCAL_RANK> when available, else cpu
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (alphanet_zoo.train.precision; auto: bf16 where faster)
    log_every: int = 20  # steps between JSON-lines log records
    checkpoint_every_steps: int = 500  # also checkpoint every this many steps (0: at epoch ends only)
    collective_timeout_s: float = 600.0  # a collective waiting longer on another process fails the run
    data: DataConfig = field(default_factory=DataConfig)
    sandwich: SandwichConfig = field(default_factory=SandwichConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    # the keyword arguments of old code, TrainConfig(amp=False): mapped onto precision, never stored
    amp: dataclasses.InitVar[bool | None] = None
    amp_dtype: dataclasses.InitVar[str | None] = None

    def __post_init__(self, amp: bool | None, amp_dtype: str | None) -> None:
        old = {k: v for k, v in (("amp", amp), ("amp_dtype", amp_dtype)) if v is not None}
        if old:
            given = {} if self.precision == "auto" else {"precision": self.precision}
            self.precision = upgrade_precision_keys({**given, **old})["precision"]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of primitives (stored in checkpoints, written as YAML)."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """The config in ``data`` (a nested mapping); an old config's ``amp``/``amp_dtype`` become ``precision``."""
        return _build(cls, upgrade_precision_keys(data), "")

    def check(self) -> "TrainConfig":
        """Raise ``ValueError`` naming the first setting out of range."""
        positive = {"epochs": self.epochs, "data.batch_size": self.data.batch_size,
                    "data.crop_size": self.data.crop_size, "sandwich.num_archs": self.sandwich.num_archs,
                    "optim.lr_per_256": self.optim.lr_per_256, "log_every": self.log_every,
                    "validation.calib_batches": self.validation.calib_batches,
                    "validation.calib_batch_size": self.validation.calib_batch_size,
                    "validation.batch_size": self.validation.batch_size}
        for key, value in positive.items():
            if not value > 0:
                raise InputError(f"{key} must be positive, got {value}")
        if self.checkpoint_every_steps < 0:
            raise InputError(f"checkpoint_every_steps must be >= 0 (0: at epoch ends only), "
                             f"got {self.checkpoint_every_steps}")
        if not 1.0 <= self.collective_timeout_s <= MAX_COLLECTIVE_TIMEOUT_S:
            raise InputError(f"collective_timeout_s must be in [1, {MAX_COLLECTIVE_TIMEOUT_S:g}] seconds, "
                             f"got {self.collective_timeout_s}")
        if self.sandwich.num_archs < 2:
            raise InputError(f"sandwich.num_archs must be at least 2 (largest and smallest), "
                             f"got {self.sandwich.num_archs}")
        if self.data.workers < 0:
            raise InputError(f"data.workers must be >= 0, got {self.data.workers}")
        for key in ("dropout", "drop_connect", "label_smoothing"):
            if not 0.0 <= getattr(self.sandwich, key) < 1.0:
                raise InputError(f"sandwich.{key} must be in [0, 1), got {getattr(self.sandwich, key)}")
        if not 0 <= self.optim.warmup_epochs <= self.epochs:
            raise InputError(f"optim.warmup_epochs must be in [0, epochs], got {self.optim.warmup_epochs}")
        non_negative = {"optim.weight_decay": self.optim.weight_decay, "optim.min_lr": self.optim.min_lr,
                        "optim.warmup_start_lr": self.optim.warmup_start_lr,
                        "validation.every_epochs": self.validation.every_epochs}
        for key, value in non_negative.items():
            if value < 0:
                raise InputError(f"{key} must be >= 0, got {value}")
        if not 0.0 <= self.optim.momentum < 1.0:
            raise InputError(f"optim.momentum must be in [0, 1), got {self.optim.momentum}")
        for key, value in (("optim.grad_clip_value", self.optim.grad_clip_value),
                           ("data.num_classes", self.data.num_classes),
                           ("validation.max_images", self.validation.max_images)):
            if value is not None and value <= 0:
                raise InputError(f"{key} must be positive (or null), got {value}")
        low, high = self.data.crop_scale
        if not 0.0 < low <= high <= 1.0:
            raise InputError(f"data.crop_scale must be [low, high] with 0 < low <= high <= 1, got {[low, high]}")
        if self.sandwich.alpha_min > self.sandwich.alpha_max or self.sandwich.iw_clip <= 0:
            raise InputError("sandwich: alpha_min must be <= alpha_max and iw_clip positive, got "
                             f"{self.sandwich.alpha_min}, {self.sandwich.alpha_max}, {self.sandwich.iw_clip}")
        check_precision(self.precision)
        if not self.data.train:
            raise InputError("data.train is not set: give the training image folder (data.train=PATH)")
        return self


def legacy_precision(amp: Any = True, amp_dtype: Any = "bfloat16") -> str:
    """The `TrainConfig.precision` that an old config's ``amp`` and ``amp_dtype`` keys meant: ``amp: false``
    is fp32, ``amp_dtype: float16`` is fp16, and ``amp: true`` with bfloat16 (the old default) is auto."""
    if not isinstance(amp, bool):
        raise InputError(f"config key amp must be bool, got {amp!r} (it is now precision: auto, fp32, bf16 or fp16)")
    if amp_dtype not in ("bfloat16", "float16"):
        raise InputError(f"config key amp_dtype must be bfloat16 or float16, got {amp_dtype!r} (it is now "
                         f"precision: auto, fp32, bf16 or fp16)")
    if not amp:
        return "fp32"
    return "fp16" if amp_dtype == "float16" else "auto"


def upgrade_precision_keys(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` with an old config's ``amp``/``amp_dtype`` replaced by the ``precision`` they meant
    (`legacy_precision`); `InputError` when ``data`` also sets ``precision`` to something else."""
    if not isinstance(data, Mapping) or not any(key in data for key in LEGACY_PRECISION_KEYS):
        return data
    data = dict(data)
    old = {key: data.pop(key) for key in LEGACY_PRECISION_KEYS if key in data}
    meant = legacy_precision(**old)
    given = data.setdefault("precision", meant)
    if given != meant:
        said = ", ".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in old.items())
        raise InputError(f"the config sets precision: {given} and the old {said}, which means precision: {meant}: "
                         f"keep precision only")
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str):
    if not isinstance(data, Mapping):
        raise InputError(f"config section {prefix.rstrip('.') or '(top level)'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"unknown config key {prefix}{unknown[0]}; known keys here: {', '.join(sorted(names))}")
    values = {}
    for key, raw in data.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, raw or {}, f"{prefix}{key}.")
        else:
            values[key] = _coerce(raw, hint, f"{prefix}{key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``hint`` (int accepted for float; lists for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ValueError as e:
                errors.append(str(e))
        raise InputError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise InputError(f"config key {key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if hint is float and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise InputError(f"config key {key} must be a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise InputError(f"config key {key} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def _yaml():
    import yaml

    return yaml


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr_per_256=0.2"`` -> (["optim", "lr_per_256"], 0.2); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"override {text!r} is not key=value (for example optim.lr_per_256=0.2)")
    try:
        value = _yaml().safe_load(raw) if raw.strip() else None
    except _yaml().YAMLError as e:
        raise InputError(f"override {text!r}: cannot parse the value: {e}") from None
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """Set each ``dotted.key=value`` in the nested dict ``data`` (in place; returns it)."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise InputError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_config_file(path: str | os.PathLike) -> dict:
    """The YAML mapping in ``path``, or in the bundled recipe of that name."""
    name = str(path)
    file = BUNDLED_CONFIGS.get(name, Path(name))
    if not file.is_file():
        raise InputError(f"config file not found: {name} (bundled recipes: {', '.join(BUNDLED_CONFIGS)})")
    try:
        data = _yaml().safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, _yaml().YAMLError) as e:
        raise InputError(f"{file} is not a readable YAML config: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{file} must hold a mapping of settings, got {type(data).__name__}")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """The recipe in ``path`` (a YAML file or a bundled recipe name; None: the defaults) plus ``overrides``."""
    data = read_config_file(path) if path is not None else {}
    given = apply_overrides({}, overrides)
    if "precision" not in given and any(key in LEGACY_PRECISION_KEYS for key in given):
        data.pop("precision", None)  # an old amp=/amp_dtype= override replaces the file's precision
    return TrainConfig.from_dict(apply_overrides(data, overrides))
