"""Downloading weights from the Hugging Face Hub, with integrity checks and bounded waiting.

The real ``huggingface_hub`` client does the transfer and keeps the cache; this module adds what
it lacks for model weights:

- integrity: every file is checked against a sha256 pinned in the registry, else against the
  Hub's own content hash (the LFS etag; the git blob sha1 of a small file); a bad file leaves the
  cache, so the next try downloads it anew;
- bounded waiting: one probe (`PROBE_TIMEOUT_S`, no retries) before downloading, so an unreachable
  Hub or one answering 5xx falls back on the cache, or fails, in seconds instead of after the
  client's back-off; a transfer that stalls (less than `MIN_PROGRESS_BYTES` in `STALL_TIMEOUT_S`)
  is abandoned;
- every failure is one `WeightsUnavailableError` or `WeightsIntegrityError` saying what happened
  and what to do; the client's own retry messages go to our logger at INFO and its progress bars
  stay off (`hub_quiet`), so nothing else reaches stderr.

The client's settings come from the environment at each call (``HF_HOME``/``HF_HUB_CACHE``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``); the client's settings are never written (its logger and
progress-bar switch change only while a transfer runs, and are restored after it).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ._version import __version__
from .errors import AlphaNetError, InputError
from .hub_quiet import quiet_client

log = logging.getLogger("alphanet_zoo")

HUB_PREFIX = "hf-hub:"
PROBE_TIMEOUT_S = 5.0  # the probe's wait for the Hub's answer
STALL_TIMEOUT_S = 30.0  # a transfer with less than MIN_PROGRESS_BYTES in this long is abandoned
MIN_PROGRESS_BYTES = 64 << 10
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
# the Hub's own rules: letters, digits, '-', '_', '.'; no '--' or '..'; not starting or ending in '-' or '.'
_REPO_PART = re.compile(r"^(?![.-])(?!.*(--|\.\.))[\w.-]{1,96}(?<![.-])$")
_REVISION = re.compile(r"^(?!/)(?!.*//)(?!.*(^|/)\.\.?(/|$))[\w.\-/]{1,255}(?<!/)$")


class WeightsUnavailableError(AlphaNetError, RuntimeError):
    """Weights could not be had: not cached and the Hub is offline, unreachable, stalled or lacks them."""


class NoPretrainedWeightsError(WeightsUnavailableError, InputError):
    """Pretrained weights were asked for an architecture that has none (a custom one): bad input."""

    exit_code = InputError.exit_code


class WeightsIntegrityError(AlphaNetError, RuntimeError):
    """A downloaded weights file does not have the expected content (it is removed from the cache)."""


def how_to_get_weights(name: str | None) -> str:
    arch = name or "NAME"
    if name is not None and not _published(name):
        return (f"They are not published on the Hub yet, so no connection will bring them: build them from the "
                f"authors' supernet checkpoint alphanet_pretrained.pth.tar with `alphanet-extract --supernet "
                f"alphanet_pretrained.pth.tar --arch {arch} --calib-data TRAIN_DIR --out weights` and load them with "
                f"alphanet_zoo.load({arch!r}, weights='weights/{arch}') (or --weights weights/{arch}); "
                f"`--weights random` gives untrained weights of the same shape")
    return (f"To get them: connect to the Hugging Face Hub (or set HF_ENDPOINT to a mirror) and retry; or "
            f"build them from the authors' supernet checkpoint alphanet_pretrained.pth.tar with "
            f"`alphanet-extract --supernet alphanet_pretrained.pth.tar --arch {arch} --calib-data TRAIN_DIR "
            f"--out weights` and load them with alphanet_zoo.load({arch!r}, weights='weights/{arch}')")


def _published(name: str) -> bool:
    """Whether the registry pins published weights for the model ``name`` (unknown names: assume so)."""
    from .registry import model_info

    try:
        return bool(model_info(name).weights.revision)
    except InputError:
        return True


def parse_hub_id(value: str) -> tuple[str, str | None]:
    """``hf-hub:org/repo[@revision]`` -> (repo id, revision or None); `InputError` for anything else."""
    spec = value[len(HUB_PREFIX):] if value.startswith(HUB_PREFIX) else value
    repo, at, revision = spec.partition("@")
    parts = repo.split("/")
    if len(parts) != 2 or not all(_REPO_PART.match(p) for p in parts) or (at and not revision):
        raise InputError(f"bad Hub id {value!r}: expected hf-hub:ORG/REPO or hf-hub:ORG/REPO@REVISION")
    if revision:
        check_revision(revision)
    return repo, revision or None


def check_revision(revision: str) -> str:
    """A branch, tag or commit id; `InputError` for anything that could leave the cache folder."""
    if not isinstance(revision, str) or not _REVISION.match(revision):
        raise InputError(f"bad Hub revision {revision!r}: expected a branch, tag or commit id")
    return revision


@dataclass(frozen=True)
class HubSettings:
    """The client's settings as the environment gives them now."""

    endpoint: str | None
    cache_dir: str | None
    offline: bool

    @classmethod
    def from_environment(cls) -> "HubSettings":
        from huggingface_hub import constants

        env = os.environ
        cache = env.get("HF_HUB_CACHE") or (os.path.join(env["HF_HOME"], "hub") if env.get("HF_HOME") else None)
        offline = (env.get("HF_HUB_OFFLINE") or "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        # the client reads HF_HUB_OFFLINE once, at its import; it stays offline if it was set then
        return cls(env.get("HF_ENDPOINT") or None, cache, offline or bool(constants.HF_HUB_OFFLINE))

    def blobs_folder(self, repo_id: str) -> Path:
        from huggingface_hub import constants

        root = Path(self.cache_dir or constants.HF_HUB_CACHE)
        return root / f"models--{repo_id.replace('/', '--')}" / "blobs"


def _file_digest(path: Path, algorithm: str, prefix: bytes = b"") -> str:
    h = hashlib.new(algorithm)
    h.update(prefix)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def drop_from_cache(pointer: Path) -> None:
    """Remove a cached file: the snapshot link, its blob and any partial downloads of the repo."""
    blob = Path(os.path.realpath(pointer))
    for path in (pointer, blob):
        path.unlink(missing_ok=True)
    if blob.parent.name == "blobs":
        _drop_partials(blob.parent)
    log.info("removed %s from the Hub cache", pointer)


def _drop_partials(blobs: Path) -> None:
    for partial in blobs.glob("*.incomplete"):
        partial.unlink(missing_ok=True)


def verify_download(path: str | os.PathLike, expected_sha256: str | None = None) -> str:
    """Check a file from the Hub cache against ``expected_sha256``, else against its Hub etag.

    The Hub names a cached blob by its etag: the sha256 of an LFS file, the git blob sha1 of a
    small one. Returns the digest. On mismatch the file leaves the cache and
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
        drop_from_cache(path)
        raise WeightsIntegrityError(
            f"{path.name} is corrupt: expected {want}, got {digest}. The bad file was removed from the "
            f"cache; retry to download it again")
    return digest


def _probe(repo_id: str, revision: str, filename: str, endpoint: str | None) -> str | None:
    """One HEAD request without retries: None when the Hub answered usefully (the file's metadata,
    or an error the download reports properly, such as 404); else why it cannot be used now."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint),
                             timeout=PROBE_TIMEOUT_S)
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status is not None and (status >= 500 or status == 429):
            return f"it answered HTTP {status}"
        return None
    except Exception as e:  # connection refused, DNS failure, timeout, proxy or TLS error, redirect loop
        return _describe(e)
    return None


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}{': ' + text[:200] if text else ''}"


class _Transfer(threading.Thread):
    """A call in a daemon thread, so a stalled transfer can be abandoned."""

    def __init__(self, call: Callable[[], Any]) -> None:
        super().__init__(daemon=True, name="alphanet_zoo-hub-download")
        self.call, self.result, self.error = call, None, None

    def run(self) -> None:
        try:
            self.result = self.call()
        except BaseException as e:  # handed to the waiting thread
            self.error = e


def _partial_bytes(blobs: Path) -> int:
    total = 0
    try:
        for partial in blobs.glob("*.incomplete"):
            try:
                total += partial.stat().st_size
            except OSError:
                pass
    except OSError:
        pass
    return total


def _wait(transfer: _Transfer, blobs: Path, what: str) -> None:
    """Wait for ``transfer``; raise `WeightsUnavailableError` once it makes too little progress."""
    transfer.start()
    last_bytes, last_progress = _partial_bytes(blobs), time.monotonic()
    while transfer.is_alive():
        transfer.join(0.2)
        now, size = time.monotonic(), _partial_bytes(blobs)
        if abs(size - last_bytes) >= MIN_PROGRESS_BYTES:
            last_bytes, last_progress = size, now
        elif now - last_progress > STALL_TIMEOUT_S:
            _drop_partials(blobs)
            raise WeightsUnavailableError(
                f"downloading {what} stalled: less than {MIN_PROGRESS_BYTES >> 10} KiB arrived in "
                f"{STALL_TIMEOUT_S:.0f} s ({size} bytes so far); the partial file was removed. Check the "
                f"connection (or HF_ENDPOINT) and retry")


def download(repo_id: str, revision: str, filename: str, name: str | None = None) -> Path:
    """The cached path of ``filename`` of Hub repo ``repo_id`` at ``revision`` (downloaded if needed).

    Raises `WeightsUnavailableError` (offline and not cached, unreachable, stalled, absent) and
    `WeightsIntegrityError` (a transfer that arrived with the wrong size).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    check_revision(revision)
    settings = HubSettings.from_environment()
    where, label = f"{repo_id}@{revision}", name or repo_id
    local_only, unreachable = settings.offline, None
    if not local_only:
        with quiet_client():
            unreachable = _probe(repo_id, revision, filename, settings.endpoint)
        local_only = unreachable is not None  # serve the cache now instead of retrying for a minute

    def fetch() -> str:
        with quiet_client():  # in the transfer's thread: an abandoned transfer stays quiet until it ends
            return hf_hub_download(
                repo_id, filename, revision=revision, library_name="alphanet_zoo", library_version=__version__,
                endpoint=settings.endpoint, cache_dir=settings.cache_dir, local_files_only=local_only,
                etag_timeout=PROBE_TIMEOUT_S)

    transfer = _Transfer(fetch)
    blobs = settings.blobs_folder(repo_id)
    _wait(transfer, blobs, f"{filename} of {label} ({where})")
    e = transfer.error
    if e is None:
        if unreachable:
            log.info("the Hub is unreachable (%s): using the cached %s of %s", unreachable, filename, where)
        return Path(transfer.result)
    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        state = ("offline mode is on (HF_HUB_OFFLINE)" if settings.offline
                 else f"the Hub ({settings.endpoint or 'huggingface.co'}) is unreachable ({unreachable})")
        raise WeightsUnavailableError(f"the weights of {label} ({where}, {filename}) are not cached and {state}. "
                                      f"{how_to_get_weights(name)}") from None
    if isinstance(e, RepositoryNotFoundError):
        raise WeightsUnavailableError(f"the Hub has no repository {repo_id} (the weights of {label} may not be "
                                      f"published yet). {how_to_get_weights(name)}") from None
    if isinstance(e, RevisionNotFoundError):
        raise WeightsUnavailableError(f"the Hub repository {repo_id} has no revision {revision!r}") from None
    if isinstance(e, EntryNotFoundError):
        raise WeightsUnavailableError(f"the Hub repository {where} has no file {filename}") from None
    _drop_partials(blobs)
    if isinstance(e, OSError) and "onsistency check" in str(e):
        raise WeightsIntegrityError(f"{filename} from {where} arrived incomplete or with the wrong size; "
                                    f"the partial file was removed: retry to download it again") from None
    if isinstance(e, HfHubHTTPError):
        raise WeightsUnavailableError(f"the Hub refused {filename} of {where}: {_describe(e)}") from None
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
        raise e
    raise WeightsUnavailableError(f"downloading {filename} from {where} failed ({_describe(e)}); the partial "
                                  f"file was removed. {how_to_get_weights(name)}") from None


def cached_path(repo_id: str, revision: str, filename: str) -> Path | None:
    """The cached file, if the cache has it for ``revision`` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - very old clients
        return None
    found = try_to_load_from_cache(repo_id, filename, cache_dir=HubSettings.from_environment().cache_dir,
                                   revision=revision)
    return Path(found) if isinstance(found, str) else None


def push_folder(folder: Path, repo_id: str, *, commit_message: str, private: bool | None = None,
                token: str | None = None, revision: str | None = None, create_pr: bool = False,
                endpoint: str | None = None) -> str:
    """Upload a folder to Hub repo ``repo_id`` (created if missing); returns the commit URL.

    Any failure is one `WeightsUnavailableError` naming the repo and what went wrong.
    """
    from huggingface_hub import HfApi

    parse_hub_id(repo_id)
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)
    try:
        with quiet_client():
            api.create_repo(repo_id, private=private, exist_ok=True)
            info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                     revision=revision, create_pr=create_pr)
    except Exception as e:  # the client's HTTP, auth and transport errors, of several libraries
        raise WeightsUnavailableError(f"pushing to the Hub repository {repo_id} failed: {_describe(e)}") from None
    return str(getattr(info, "commit_url", info))
