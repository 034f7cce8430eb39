"""Which weights: one grammar (`WeightsSpec`) for the API and every command, and the one factory, `load`.

    load("a5")                               # the architecture, randomly initialised
    load("a5", pretrained=True)              # the registry's pinned Hub weights
    load("hf-hub:org/repo@rev")              # any Hub repo written by save_pretrained
    load("hf-hub:org/repo", pretrained=True)   # the same (timm's spelling)
    load("hf-hub:org/repo", pretrained=False)  # its architecture (config.json), randomly initialised
    load("a5", weights="weights/")           # a save_pretrained folder, or a folder of them (weights/a5/)
    load("a5", weights="a5.safetensors")     # bare subnet weights
    load("a5", weights="supernet.pth.tar")   # a supernet checkpoint: the subnet is extracted
    load("path/to/folder")                   # a folder names its own architecture

A weights spec is ``pretrained`` | ``hf-hub:ORG/REPO[@REV]`` | a path | ``random``; a path is told
apart by its content (folder with ``config.json``, folder of such folders, ``.safetensors`` or torch
file of a subnet, supernet checkpoint). Nothing is unpickled with code.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ._io import read_json
from .checkpoint import build_with_state, num_classes_in, read_state_dict
from .config import ArchConfig
from .errors import InputError
from .feature_info import DEFAULT_OUT_INDICES
from .features import AlphaNetFeatures
from .hub import (HUB_PREFIX, NoPretrainedWeightsError, WeightsUnavailableError, download, drop_from_cache,
                  parse_hub_id, verify_download)
from .model import AlphaNet, check_num_classes
from .pretrained import CONFIG_NAME, WEIGHTS_NAME
from .record import ModelRecord, Origin
from .registry import MODELS, model_info, name_of, resolve_arch
from .supernet import Supernet

log = logging.getLogger("alphanet_zoo")

PRETRAINED, RANDOM, HUB, PATH = "pretrained", "random", "hub", "path"
KEYWORDS = (PRETRAINED, RANDOM)
GRAMMAR = "pretrained | hf-hub:ORG/REPO[@REV] | PATH (folder, .safetensors, supernet checkpoint) | random"


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed weights spec: ``kind`` is pretrained, hub, path or random."""

    kind: str
    repo_id: str | None = None
    revision: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, value: "str | os.PathLike | WeightsSpec") -> "WeightsSpec":
        """Read a spec; `InputError` for anything else, or for a keyword that is also a path here."""
        if isinstance(value, WeightsSpec):
            return value
        if isinstance(value, os.PathLike):
            return cls(PATH, path=Path(value))
        if not isinstance(value, str) or not value.strip():
            raise InputError(f"bad weights {value!r}: expected {GRAMMAR}")
        text = value.strip()
        if text.startswith(HUB_PREFIX):
            repo_id, revision = parse_hub_id(text)
            return cls(HUB, repo_id, revision)
        if text in KEYWORDS:
            if Path(text).exists():
                raise InputError(f"weights {text!r} is ambiguous: it is a keyword and also a path here; write "
                                 f"./{text} for the path")
            return cls(text)
        return cls(PATH, path=Path(text))

    def __str__(self) -> str:
        if self.kind == HUB:
            return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")
        return str(self.path) if self.kind == PATH else self.kind

    def with_revision(self, revision: str | None) -> "WeightsSpec":
        """The spec at ``revision`` (pretrained and Hub weights only)."""
        if revision is None:
            return self
        if self.kind not in (PRETRAINED, HUB):
            raise InputError(f"a revision applies to Hub weights only, not to {self}")
        if self.revision and self.revision != revision:
            raise InputError(f"two revisions given: {self.revision!r} and {revision!r}")
        return WeightsSpec(self.kind, self.repo_id, revision, self.path)


class WeightsLoader:
    """Builds models from one weights spec, for one architecture or many (a supernet is read once).

    ``loader.load(arch, name)`` returns an `AlphaNet` in eval mode whose ``pretrained_cfg`` says
    where the weights came from. ``num_classes=None`` keeps the head the weights have; an int
    replaces the classifier by a fresh one only when it differs (0: none), as does a ``global_pool``
    ("avg", or "" with no classifier) other than the model's. ``drop_rate`` and ``drop_connect_rate``
    set the model's training regularisation (`AlphaNet.set_drop_rates`). The model is built once.
    """

    def __init__(self, spec: "WeightsSpec | str | os.PathLike", map_location: str | torch.device = "cpu") -> None:
        self.spec = WeightsSpec.parse(spec)
        self.map_location = map_location
        self._supernet: Supernet | None = None

    def load(self, arch: ArchConfig | None = None, name: str | None = None, num_classes: int | None = None, *,
             global_pool: str | None = None, drop_rate: float = 0.0, drop_connect_rate: float = 0.0) -> AlphaNet:
        if num_classes is not None:
            check_num_classes(num_classes)
        kind = self.spec.kind
        if kind in (RANDOM, PRETRAINED) and arch is None:
            raise InputError(f"{kind} weights need an architecture (a model name or ArchConfig)")
        if kind == RANDOM:
            model = AlphaNet(arch, 1000 if num_classes is None else num_classes, global_pool=global_pool or "avg")
        elif kind == PRETRAINED:
            model = self._pretrained(arch)
        elif kind == HUB:
            model = self._from_hub(self.spec.repo_id, self.spec.revision or "main", None, arch, name)
        else:
            model = self._from_path(self.spec.path, arch, name)
        if name and model.pretrained_cfg.name is None:  # a custom architecture named by its file
            model.pretrained_cfg = dataclasses.replace(model.pretrained_cfg, name=name)
        if ((num_classes is not None and num_classes != model.num_classes)
                or (global_pool is not None and global_pool != model.global_pool)):
            model.reset_classifier(model.num_classes if num_classes is None else num_classes, global_pool)
        model.set_drop_rates(drop_rate, drop_connect_rate)
        return model.to(self.map_location).eval()

    # ---- sources ----------------------------------------------------------------------------
    def _pretrained(self, arch: ArchConfig) -> AlphaNet:
        name = name_of(arch)
        if name is None:
            raise NoPretrainedWeightsError(
                "no pretrained weights are published for a custom architecture; extract it from a supernet "
                "checkpoint (--weights alphanet_pretrained.pth.tar, or alphanet-extract --calib-data to calibrate "
                "it too), or use --weights random for untrained weights")
        pin = MODELS[name].weights
        revision = self.spec.revision or pin.revision or "main"
        pinned_sha = pin.sha256 if pin.sha256 and revision == (pin.revision or "main") else None
        return self._from_hub(pin.hub_repo, revision, pinned_sha, arch, name)

    def _from_hub(self, repo_id: str, revision: str, pinned_sha256: str | None, arch: ArchConfig | None,
                  name: str | None) -> AlphaNet:
        config_path = download(repo_id, revision, CONFIG_NAME, name)
        verify_download(config_path)
        weights_path = download(repo_id, revision, WEIGHTS_NAME, name)
        verify_download(weights_path, pinned_sha256)
        try:
            return _from_folder_files(config_path, weights_path, f"Hub repository {repo_id}@{revision}", arch)
        except InputError:
            # the bytes matched their hash, so the repo itself is bad; keep nothing of it for the next try
            drop_from_cache(weights_path)
            raise

    def _from_path(self, path: Path, arch: ArchConfig | None, name: str | None) -> AlphaNet:
        if not path.exists():
            raise InputError(f"weights not found: {path}")
        if path.is_dir():
            return _from_folder_files(*_model_folder_files(path, name), arch)
        state = read_state_dict(path)
        if Supernet.is_supernet_state(state):
            if arch is None:
                raise InputError(f"{path} is a supernet checkpoint: name the subnet to extract, "
                                 f"e.g. load('a5', weights={str(path)!r})")
            if self._supernet is None:
                self._supernet = Supernet.from_state_dict(state, what=f"supernet checkpoint {path}",
                                                          source=path.name)
            return self._supernet.extract(arch)
        if arch is None:
            raise InputError(f"{path} holds bare weights: name the architecture, e.g. load('a0', weights=...)")
        classes = num_classes_in(state)
        model = build_with_state(lambda: AlphaNet(arch, classes), state, f"weights file {path}")
        model.pretrained_cfg = ModelRecord.create(arch, classes, origin=Origin.FILE,
                                                  source=f"weights file {path.name}")
        return model


def _model_folder_files(path: Path, name: str | None) -> tuple[Path, Path, str]:
    """(config, weights, description) of the save_pretrained folder ``path``, or of ``path/name``.

    A folder is a model folder when it holds ``model.safetensors``: save_pretrained puts the
    weights in place last, so a folder without them is an interrupted save, not a model.
    """
    folder = path
    if not (folder / WEIGHTS_NAME).is_file() and name and (path / name / WEIGHTS_NAME).is_file():
        folder = path / name  # a folder of per-model folders, as alphanet-extract --out writes
        log.info("using %s (the folder for %s inside %s)", folder, name, path)
    inside = f" nor a folder of them holding {name}/" if name else ""
    if not (folder / WEIGHTS_NAME).is_file():
        raise InputError(f"{path} is not a save_pretrained folder{inside}: it has no {WEIGHTS_NAME} (a save "
                         f"that was interrupted leaves a folder without it; save the model again)")
    if not (folder / CONFIG_NAME).is_file():
        raise InputError(f"{path} is not a save_pretrained folder ({CONFIG_NAME} is missing){inside}")
    return folder / CONFIG_NAME, folder / WEIGHTS_NAME, str(folder)


def _from_folder_files(config_path: Path, weights_path: Path, what: str, arch: ArchConfig | None) -> AlphaNet:
    record = ModelRecord.from_dict(read_json(config_path, f"{what}/{CONFIG_NAME}"), f"{what}/{CONFIG_NAME}")
    if arch is not None and arch != record.arch:
        raise InputError(f"{what} holds architecture {record.arch.to_dict()}, not the requested {arch.to_dict()}")
    state = read_state_dict(weights_path)
    model = build_with_state(lambda: AlphaNet(record.arch, record.num_classes), state, what)
    model.pretrained_cfg = record
    return model


def _is_path_argument(value: Any) -> bool:
    """Whether ``load``'s first argument names weights on disk rather than an architecture.

    A string that is neither a published model nor an existing path is a path when it looks like
    one (a folder separator, a leading ``.`` or ``~``, a file suffix), else an unknown model name.
    """
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str):
        return False
    try:
        model_info(value)
    except InputError:
        if Path(value).exists() or _looks_like_path(value):
            return True
        raise
    if Path(value).exists() and os.sep not in value and not value.startswith("."):
        raise InputError(f"{value!r} names both a published model and the path ./{value}: write './{value}' to "
                         f"load the folder, or pass alphanet_zoo.get_arch({value!r}) for the published model")
    return False


def _looks_like_path(text: str) -> bool:
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    return any(s in text for s in separators) or text.startswith((".", "~")) or bool(Path(text).suffix)


def _hub_architecture(spec: WeightsSpec) -> ModelRecord:
    """The record in the ``config.json`` of Hub repo ``spec`` (for its architecture without its weights)."""
    revision = spec.revision or "main"
    try:
        config_path = download(spec.repo_id, revision, CONFIG_NAME)
    except WeightsUnavailableError as e:
        raise WeightsUnavailableError(
            f"pretrained=False with {spec} builds the architecture of its {CONFIG_NAME} with random weights, and "
            f"that file could not be had: {e}. Pass the architecture instead (a model name or ArchConfig)") from None
    verify_download(config_path)
    what = f"Hub repository {spec.repo_id}@{revision}/{CONFIG_NAME}"
    return ModelRecord.from_dict(read_json(config_path, what), what)


def load(name_or_id: str | ArchConfig | Mapping | os.PathLike, pretrained: bool | None = None, *,
         weights: "str | os.PathLike | WeightsSpec | None" = None, revision: str | None = None,
         num_classes: int | None = None, map_location: str | torch.device = "cpu", features_only: bool = False,
         out_indices: int | Sequence[int] | None = DEFAULT_OUT_INDICES, global_pool: str | None = None,
         drop_rate: float = 0.0, drop_connect_rate: float = 0.0) -> AlphaNet | AlphaNetFeatures:
    """An AlphaNet model in eval mode: by registry name or alias, ``hf-hub:`` id, `ArchConfig`, or path.

    ``pretrained=True`` is ``weights="pretrained"``: the registry's Hub weights at its pinned revision
    (or ``revision``), sha256-checked. ``weights`` takes any spec of the grammar (`WeightsSpec`).
    An ``hf-hub:`` id loads the repo's weights (``pretrained=True`` says so again, as in timm);
    ``pretrained=False`` with it builds the repo's architecture with random weights.
    ``num_classes=None`` keeps the head the weights have; an int gives a fresh classifier only when
    it differs (0: no classifier; with ``global_pool=""`` no pooling either, timm's headless model).
    ``drop_rate`` and ``drop_connect_rate`` are the training regularisation (`AlphaNet.set_drop_rates`).
    Raises `WeightsUnavailableError` when Hub weights cannot be had, `WeightsIntegrityError` when a
    download is corrupt, `InputError` for bad names, paths or files. The model is built once:
    `timm_models.create_alphanet` and ``hubconf`` build theirs here.
    ``features_only=True`` returns the model's `AlphaNetFeatures` at the taps ``out_indices``
    (default: the maps at strides 4, 8, 16, 32; see `alphanet_zoo.feature_info`).
    """
    if pretrained and weights is not None:
        raise InputError("give either pretrained=True or weights=..., not both")
    spec = WeightsSpec.parse(weights) if weights is not None else WeightsSpec(PRETRAINED if pretrained else RANDOM)
    arch = name = None
    if isinstance(name_or_id, str) and name_or_id.startswith(HUB_PREFIX):
        if weights is not None:
            raise InputError(f"{name_or_id} names Hub weights; do not pass weights= with it")
        spec, revision = WeightsSpec.parse(name_or_id).with_revision(revision), None
        if pretrained is False:
            record = _hub_architecture(spec)
            arch, spec = record.arch, WeightsSpec(RANDOM)
            num_classes = record.num_classes if num_classes is None else num_classes
    elif _is_path_argument(name_or_id):
        path = Path(name_or_id)
        if not path.exists():
            raise InputError(f"weights not found: {path}")
        if weights is not None or pretrained:
            raise InputError(f"{name_or_id} names weights on disk; do not pass weights= or pretrained= with it")
        spec = WeightsSpec(PATH, path=path)
    else:
        arch = resolve_arch(name_or_id).validate()
        name = name_of(arch)
    model = WeightsLoader(spec.with_revision(revision), map_location).load(
        arch, name, num_classes, global_pool=global_pool, drop_rate=drop_rate, drop_connect_rate=drop_connect_rate)
    return AlphaNetFeatures(model, out_indices) if features_only else model
