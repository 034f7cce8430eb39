"""`load()`: a model by name, Hub id or local weights, with integrity checks on everything downloaded.

    load("a5")                              # architecture only, random init
    load("a5", pretrained=True)             # weights from the Hub, at the registry's pinned revision
    load("hf-hub:org/repo@rev")             # any Hub repo written by save_pretrained
    load("a5", weights="folder/")           # a save_pretrained folder, a .safetensors file,
    load("a5", weights="supernet.pth.tar")  # ... or a supernet checkpoint (the subnet is extracted)

The Hub client honours ``HF_HOME``/``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE``; they are
read at each call. Nothing is unpickled with code: safetensors, or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from .checkpoint import CheckpointError, build_with_state, num_classes_in, read_state_dict
from .config import ArchConfig
from .model import AlphaNet
from .pretrained import CONFIG_NAME, WEIGHTS_NAME
from .registry import MODELS, model_info, resolve_arch
from .supernet import Supernet

HUB_PREFIX = "hf-hub:"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be had: not cached and the Hub is offline, unreachable or lacks them."""


class WeightsIntegrityError(RuntimeError):
    """A downloaded weights file does not have the expected content (it is removed from the cache)."""


def how_to_get_weights(name: str | None) -> str:
    arch = name or "NAME"
    return (f"To get them: connect to the Hugging Face Hub (or set HF_ENDPOINT to a mirror) and retry; or "
            f"build them from the authors' supernet checkpoint alphanet_pretrained.pth.tar with "
            f"`alphanet-extract --supernet alphanet_pretrained.pth.tar --arch {arch} --out weights` and load "
            f"them with alphanet_zoo.load({arch!r}, weights='weights/{arch}'), or pass the supernet "
            f"directly: alphanet_zoo.load({arch!r}, weights='alphanet_pretrained.pth.tar')")


def parse_hub_id(value: str) -> tuple[str, str | None]:
    """``hf-hub:org/repo[@revision]`` -> (repo id, revision or None)."""
    spec = value[len(HUB_PREFIX):] if value.startswith(HUB_PREFIX) else value
    repo, _, revision = spec.partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo) or (_ and not revision):
        raise ValueError(f"bad Hub id {value!r}: expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION")
    return repo, revision or None


def _hub_settings() -> dict[str, Any]:
    """The Hub client's settings from the environment, read now (not at import)."""
    from huggingface_hub import constants

    env = os.environ
    cache = env.get("HF_HUB_CACHE") or (os.path.join(env["HF_HOME"], "hub") if env.get("HF_HOME") else None)
    offline = (env.get("HF_HUB_OFFLINE") or "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    # huggingface_hub reads HF_HUB_OFFLINE once, at its import, and refuses every request while it
    # was set then; keep it in step with the environment of this call
    constants.HF_HUB_OFFLINE = offline
    return {"endpoint": env.get("HF_ENDPOINT") or None, "cache_dir": cache, "local_files_only": offline}


def _file_digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algorithm)
    h.update(prefix)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _drop_from_cache(pointer: Path) -> None:
    """Remove a cached file: the snapshot link, its blob and any partial downloads of the repo."""
    blob = Path(os.path.realpath(pointer))
    for path in (pointer, blob):
        path.unlink(missing_ok=True)
    blobs = blob.parent
    if blobs.name == "blobs":
        for partial in blobs.glob("*.incomplete"):
            partial.unlink(missing_ok=True)


def verify_download(path: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """Check a file from the Hub cache against ``expected_sha256``, else against its Hub etag.

    The Hub names a cached blob by its etag: the sha256 of an LFS file, the git blob sha1 of a
    small one. Returns the sha256. On mismatch the file leaves the cache and
    `WeightsIntegrityError` is raised.
    """
    path = Path(path)
    digest = _file_digest(path, "sha256")
    etag = Path(os.path.realpath(path)).name
    if expected_sha256:
        ok, want = digest == expected_sha256.lower(), f"sha256 {expected_sha256} (pinned in the registry)"
    elif _SHA256.match(etag):
        ok, want = digest == etag, f"sha256 {etag} (the Hub's LFS etag)"
    elif _GIT_SHA1.match(etag):
        sha1 = _file_digest(path, "sha1", b"blob %d\0" % path.stat().st_size)
        ok, want, digest = sha1 == etag, f"git blob sha1 {etag} (the Hub's etag)", sha1
    else:
        return digest  # not a Hub cache blob (no etag to check against)
    if not ok:
        _drop_from_cache(path)
        raise WeightsIntegrityError(
            f"{path.name} is corrupt: expected {want}, got {digest}. The bad file was removed from the "
            f"cache; retry to download it again")
    return digest


REACH_TIMEOUT = 5.0  # seconds to wait for the Hub's answer before treating it as unreachable


def _reachable(repo_id: str, revision: str, filename: str, endpoint: str | None) -> bool:
    """One HEAD request without retries: False when the Hub cannot be reached at all."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint),
                             timeout=REACH_TIMEOUT, endpoint=endpoint, retry_on_errors=False)
    except HfHubHTTPError:
        return True  # it answered (404, 401, ...): hf_hub_download reports it properly
    except Exception:  # connection refused, DNS failure, timeout, proxy error
        return False
    return True


def _download(repo_id: str, revision: str, filename: str, name: str | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    from . import __version__

    settings = _hub_settings()
    where = f"{repo_id}@{revision}"
    if not settings["local_files_only"] and not _reachable(repo_id, revision, filename, settings["endpoint"]):
        # The client would retry with back-off for half a minute before giving up: serve from the
        # cache now, or fail at once.
        settings["local_files_only"] = True
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, library_name="alphanet_zoo",
                                    library_version=__version__, **settings))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as e:
        state = ("offline mode is on (HF_HUB_OFFLINE)" if _hub_settings()["local_files_only"]
                 else f"the Hub ({settings['endpoint'] or 'huggingface.co'}) is unreachable")
        raise WeightsUnavailableError(
            f"the weights of {name or repo_id} ({where}, {filename}) are not cached and {state}. "
            f"{how_to_get_weights(name)}") from e
    except RepositoryNotFoundError as e:
        raise WeightsUnavailableError(
            f"the Hub has no repository {repo_id} (the weights of {name or repo_id} may not be published "
            f"yet). {how_to_get_weights(name)}") from e
    except RevisionNotFoundError as e:
        raise WeightsUnavailableError(f"the Hub repository {repo_id} has no revision {revision!r}") from e
    except EntryNotFoundError as e:
        raise WeightsUnavailableError(f"the Hub repository {where} has no file {filename}") from e
    except OSError as e:
        # the client's own size check ("Consistency check failed") and transfer errors
        if "onsistency check" in str(e):
            raise WeightsIntegrityError(f"{filename} from {where} arrived incomplete or with the wrong size "
                                        f"({e}); retry to download it again") from e
        raise WeightsUnavailableError(f"downloading {filename} from {where} failed: {e}. "
                                      f"{how_to_get_weights(name)}") from e


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        ArchConfig.from_dict(config["architecture"])
        return config
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not an alphanet_zoo config.json: {e}") from None


def _model_from_state(arch: ArchConfig, state: Mapping[str, torch.Tensor], num_classes: int | None,
                      cfg: dict[str, Any], what: str) -> AlphaNet:
    """An `AlphaNet` holding ``state`` (a subnet's state dict); a new head if ``num_classes`` differs."""
    saved_classes = num_classes_in(state)
    model = build_with_state(lambda: AlphaNet(arch, saved_classes), state, what)
    if num_classes is not None and num_classes != saved_classes:
        model.reset_classifier(num_classes)
    model.pretrained_cfg = cfg
    return model.eval()


def _from_local(weights: str | os.PathLike, arch: ArchConfig | None, name: str | None, num_classes: int | None,
                map_location: str | torch.device) -> AlphaNet:
    path = Path(weights)
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(f"{path} is not a save_pretrained folder: {p.name} is missing")
        return _from_folder_files(config_path, weights_path, arch, num_classes, map_location, str(path))
    state = read_state_dict(path, map_location)
    if Supernet.is_supernet_state(state):
        if arch is None:
            raise ValueError(f"{path} is a supernet checkpoint: name the subnet to extract, "
                             f"e.g. load('a5', weights={str(path)!r})")
        model = Supernet.from_state_dict(state, what=f"supernet checkpoint {path}").extract(arch)
        if num_classes is not None and num_classes != model.num_classes:
            model.reset_classifier(num_classes)
        model.pretrained_cfg = {"name": name, "source": f"extracted from the supernet checkpoint {path.name}"}
        return model
    if arch is None:
        raise ValueError(f"{path} holds bare weights: name the architecture, e.g. load('a0', weights=...)")
    return _model_from_state(arch, state, num_classes, {"name": name, "source": path.name}, f"weights file {path}")


def _from_folder_files(config_path: Path, weights_path: Path, arch: ArchConfig | None, num_classes: int | None,
                       map_location: str | torch.device, what: str) -> AlphaNet:
    config = _read_config(config_path)
    saved_arch = ArchConfig.from_dict(config["architecture"])
    if arch is not None and arch != saved_arch:
        raise ValueError(f"{what} holds architecture {saved_arch.to_dict()}, not the requested {arch.to_dict()}")
    state = read_state_dict(weights_path, map_location)
    cfg = {k: config.get(k) for k in ("name", "calibration", "metrics", "license", "source", "labels")}
    return _model_from_state(saved_arch, state, num_classes, cfg, what)


def _from_hub(repo_id: str, revision: str, pinned_sha256: str | None, arch: ArchConfig | None, name: str | None,
              num_classes: int | None, map_location: str | torch.device) -> AlphaNet:
    config_path = _download(repo_id, revision, CONFIG_NAME, name)
    verify_download(config_path)
    weights_path = _download(repo_id, revision, WEIGHTS_NAME, name)
    verify_download(weights_path, pinned_sha256)
    try:
        return _from_folder_files(config_path, weights_path, arch, num_classes, map_location,
                                  f"Hub repository {repo_id}@{revision}")
    except CheckpointError:
        # the bytes matched their hash, so the repo itself is bad; keep nothing of it for the next try
        _drop_from_cache(weights_path)
        raise


def _is_folder_argument(value: Any) -> bool:
    """A folder path given in place of a name (registry names win over same-named folders)."""
    if isinstance(value, os.PathLike):
        return True
    if not isinstance(value, str):
        return False
    try:
        model_info(value)
        return False
    except ValueError:
        return Path(value).is_dir()


def load(name_or_id: str | ArchConfig | Mapping | os.PathLike, pretrained: bool = False, *,
         weights: str | os.PathLike | None = None, revision: str | None = None, num_classes: int = 1000,
         map_location: str | torch.device = "cpu") -> AlphaNet:
    """An AlphaNet model in eval mode, by registry name/alias, ``hf-hub:`` id, config or folder.

    ``pretrained=True`` downloads ``config.json`` and ``model.safetensors`` from the Hub at the
    registry's pinned revision (or ``revision``) and checks the weights' sha256 against the pin,
    else against the Hub's etag. ``weights=`` loads local weights instead. A ``num_classes`` other
    than the weights' keeps the backbone and gives the model a freshly initialised classifier.
    Raises `WeightsUnavailableError` when pretrained weights cannot be had (offline, unreachable, absent)
    and `WeightsIntegrityError` when a download is corrupt.
    """
    if pretrained and weights is not None:
        raise ValueError("give either pretrained=True or weights=..., not both")
    if isinstance(name_or_id, str) and name_or_id.startswith(HUB_PREFIX):
        if weights is not None:
            raise ValueError(f"{name_or_id} names Hub weights; do not pass weights= with it")
        repo_id, hub_revision = parse_hub_id(name_or_id)
        if revision and hub_revision and revision != hub_revision:
            raise ValueError(f"two revisions given: {hub_revision!r} in the id and revision={revision!r}")
        return _from_hub(repo_id, revision or hub_revision or "main", None, None, None, num_classes, map_location)
    if _is_folder_argument(name_or_id) and weights is None and not pretrained:
        return _from_local(name_or_id, None, None, num_classes, map_location)
    arch = resolve_arch(name_or_id).validate()
    name = next((n for n, m in MODELS.items() if m.arch == arch), None)
    if weights is not None:
        return _from_local(weights, arch, name, num_classes, map_location)
    if pretrained:
        if name is None:
            raise WeightsUnavailableError(
                "no pretrained weights are published for a custom architecture; extract it from a supernet "
                "checkpoint: alphanet_zoo.load(arch, weights='alphanet_pretrained.pth.tar')")
        pin = MODELS[name].weights
        rev = revision or pin.revision or "main"
        pinned_sha = pin.sha256 if pin.sha256 and rev == (pin.revision or "main") else None
        return _from_hub(pin.hub_repo, rev, pinned_sha, arch, name, num_classes, map_location)
    model = AlphaNet(arch, num_classes).to(map_location)
    model.pretrained_cfg = {"name": name, "source": "random initialisation"}
    return model.eval()
