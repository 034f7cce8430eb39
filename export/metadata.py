"""What travels inside an exported file, so its user needs nothing else: the model's record, and how
the file was made.

Two entries, in every format:

- ``config``: the record (`alphanet_zoo.record.ModelRecord`: name, architecture, classes and
  labels, preprocessing, metrics, calibration, license, provenance), the very JSON a model folder
  keeps as ``config.json``. `read_metadata` returns it, validated by ``ModelRecord.from_dict``.
- ``export``: how the file was made and checked (`read_export_info`): the format, the precision
  (``fp32``, ``bf16`` or ``int8``) and, for ``--precision auto``, which candidates were timed and
  why this one was chosen; the agreement with the fp32 PyTorch model measured on real images
  (logit cosine, top-1 agreement, top-5 overlap, on which images); the verification against
  PyTorch; the quantization recipe of an int8 file; and the runtime settings `open_model` applies
  (OpenVINO's inference precision). It is kept apart from ``config`` so the record stays exactly
  the folder's ``config.json``.

Where they live:

| format | ``config`` | ``export`` |
| --- | --- | --- |
| ONNX | ``metadata_props`` key ``config`` | ``metadata_props`` key ``export`` |
| OpenVINO IR (``.xml`` + ``.bin``) | ``rt_info`` ``alphanet_zoo/config`` | ``rt_info`` ``alphanet_zoo/export`` |
| TorchScript (``.pt``) | extra file ``config.json`` | extra file ``export.json`` |
| pt2 (``torch.export``) | extra file ``config.json`` | extra file ``export.json`` |
| TFLite / LiteRT (``.tflite``) | flatbuffer metadata ``alphanet_zoo/config`` | ``alphanet_zoo/export`` |
| ExecuTorch (``.pte``) | sidecar ``NAME.pte.json`` key ``config`` | the same file, key ``export`` |

(a ``.pte`` holds no free-form metadata, so its record travels beside it, written and renamed with it,
with the program's sha256 under ``file_sha256``: a record beside another program is refused.)

Both are JSON strings. Reading needs neither OpenVINO nor torch: an IR's ``.xml`` is parsed as XML,
TorchScript and pt2 files are zip archives, a ``.pte``'s record is plain JSON; a ``.tflite``'s
flatbuffer is read with LiteRT's schema (``pip install 'alphanet_zoo[litert]'``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from torch import nn

from alphanet_zoo._io import MAX_JSON_BYTES, parse_json
from alphanet_zoo.errors import InputError
from alphanet_zoo.features import AlphaNetFeatures
from alphanet_zoo.record import ModelRecord

log = logging.getLogger("alphanet_zoo")

CONFIG_KEY = "config"
EXPORT_KEY = "export"
SIDECAR_HASH_KEY = "file_sha256"  # in a NAME.pte.json: the sha256 of the program it describes
TORCHSCRIPT_METADATA_FILE = "config.json"
EXPORT_METADATA_FILE = "export.json"
OPENVINO_SECTION = "alphanet_zoo"  # rt_info section of an OpenVINO IR: alphanet_zoo/config, alphanet_zoo/export
EXPORT_INFO_FORMAT = "alphanet_zoo.export/1"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
FORMATS = ("onnx", "openvino", "torchscript", "pt2", "executorch", "tflite")
TFLITE_METADATA = {CONFIG_KEY: f"{OPENVINO_SECTION}/{CONFIG_KEY}", EXPORT_KEY: f"{OPENVINO_SECTION}/{EXPORT_KEY}"}
TFLITE_CONTENT_KEY = f"{OPENVINO_SECTION}/content_sha256"  # sha256 of a .tflite's weights (`tflite_content_sha256`)
TFLITE_MAGIC = b"TFL3"  # a TFLite flatbuffer's file identifier (bytes 4-8)
PTE_MAGIC = b"ET"  # an ExecuTorch program's (bytes 4-6: ET12, ET13...)
MAX_XML_BYTES = 64 << 20  # an IR's .xml holds the graph only (weights are in the .bin)


def export_metadata(model: nn.Module) -> dict[str, Any]:
    """The metadata of an exported `AlphaNet`: its record, as ``config.json`` holds it."""
    return model.pretrained_cfg.to_dict()


def output_names(model: nn.Module) -> list[str]:
    """The graph outputs of an export: ``logits``, or one ``stride{s}`` per map of an `AlphaNetFeatures`."""
    if isinstance(model, AlphaNetFeatures):
        return [f"stride{r}" for r in model.feature_info.reduction()]
    return [OUTPUT_NAME]


def to_string_props(metadata: dict[str, Any], export_info: dict[str, Any] | None = None) -> dict[str, str]:
    """Metadata as ONNX ``metadata_props``: the record as JSON under ``config`` (and ``export``)."""
    props = {CONFIG_KEY: json.dumps(metadata)}
    if export_info is not None:
        props[EXPORT_KEY] = json.dumps(export_info)
    return props


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the record of a file without metadata of its own (an ExecuTorch ``.pte``) lives: ``NAME.pte.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def file_format(path: str | os.PathLike) -> str:
    """``onnx``, ``openvino``, ``torchscript``, ``pt2``, ``executorch`` or ``tflite``, told from the file's content
    (and an IR's suffix)."""
    path = Path(path)
    if path.suffix.lower() == ".bin" and path.with_suffix(".xml").is_file():
        raise InputError(f"{path} is the weights file of an OpenVINO IR: give its {path.with_suffix('.xml').name}")
    if path.name.lower().endswith(".pte.json") and path.with_name(path.name[:-5]).is_file():
        raise InputError(f"{path} is the record beside an ExecuTorch program: give its {path.name[:-5]}")
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): not a model file (an interrupted copy or export?)")
    if path.suffix.lower() == ".xml":
        return "openvino"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise InputError(f"{path} is not a readable archive: {e}") from None
        tops = {tuple(n.split("/")[1:]) for n in names if n.count("/") >= 1}
        if ("archive_format",) in tops or any(t[0] == "models" and len(t) == 2 for t in tops):
            return "pt2"  # torch.export.save's archive (PT2 archive format)
        if ("data.pkl",) in tops:
            return "torchscript"
        raise InputError(f"{path} is a zip archive but neither a TorchScript nor a torch.export (pt2) file")
    with open(path, "rb") as f:
        head = f.read(64)
    if head[4:8] == TFLITE_MAGIC:
        return "tflite"
    if head[4:6] == PTE_MAGIC and head[6:8].isdigit():
        return "executorch"
    if head.lstrip().startswith(b"<"):
        return "openvino"
    expected = {".pte": "an ExecuTorch program", ".tflite": "a TFLite model"}.get(path.suffix.lower())
    if expected:
        raise InputError(f"{path} is not {expected}: its header lacks the format's identifier (a damaged or "
                         "truncated file?)")
    return "onnx"


def _read_entries(path: Path, fmt: str) -> dict[str, str]:
    """The raw ``config`` and ``export`` strings stored in a file (either may be missing)."""
    if fmt in ("torchscript", "pt2"):
        wanted = {TORCHSCRIPT_METADATA_FILE: CONFIG_KEY, EXPORT_METADATA_FILE: EXPORT_KEY}
        found = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                parts = info.filename.split("/")
                if len(parts) >= 2 and parts[-2] == "extra" and parts[-1] in wanted:
                    if info.file_size > MAX_JSON_BYTES:
                        raise InputError(f"{path}: metadata {parts[-1]} is larger than {MAX_JSON_BYTES >> 20} MiB")
                    found[wanted[parts[-1]]] = archive.read(info).decode("utf-8", errors="replace")
        return found
    if fmt == "openvino":
        return _read_ir_rt_info(path)
    if fmt == "executorch":
        return _read_sidecar(path)
    if fmt == "tflite":
        return _read_tflite_metadata(path)
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for a file that is not ONNX
        raise InputError(f"{path} is not a readable ONNX file: {type(e).__name__}") from None
    return {p.key: p.value for p in proto.metadata_props if p.key in (CONFIG_KEY, EXPORT_KEY)}


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_record(path: str | os.PathLike, metadata: dict[str, Any], export_info: dict[str, Any]) -> str:
    """The ``NAME.pte.json`` text for the program at ``path``: its record, how it was made, and the sha256 of
    the program it describes (`SIDECAR_HASH_KEY`), so a record copied beside another program is refused."""
    return json.dumps({CONFIG_KEY: metadata, EXPORT_KEY: export_info, SIDECAR_HASH_KEY: file_sha256(path)})


def _read_sidecar(path: Path) -> dict[str, str]:
    """``config`` and ``export`` of the ``NAME.pte.json`` beside an ExecuTorch program (none: no entries),
    refused when the sha256 it records is not the program's."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    if sidecar.stat().st_size > MAX_JSON_BYTES:
        raise InputError(f"{sidecar} is larger than {MAX_JSON_BYTES >> 20} MiB")
    data = parse_json(sidecar.read_text(encoding="utf-8", errors="replace"), str(sidecar))
    if not isinstance(data, dict):
        raise InputError(f"{sidecar} must hold a JSON object")
    recorded = data.get(SIDECAR_HASH_KEY)
    if recorded is None:
        log.warning("%s records no sha256 of %s (an export older than alphanet_zoo 0.4): not checked", sidecar.name,
                    path.name)
    elif recorded != file_sha256(path):
        raise InputError(f"{sidecar.name} is not the record of {path.name}: it describes a file with sha256 "
                         f"{str(recorded)[:12]}..., and {path.name} is {file_sha256(path)[:12]}...; export the model "
                         "again, or put its own record beside it")
    return {key: json.dumps(data[key]) for key in (CONFIG_KEY, EXPORT_KEY) if data.get(key) is not None}


def tflite_content_sha256(data: bytes) -> str:
    """The sha256 of a TFLite flatbuffer's buffers (its weights and constants) other than its metadata: what a
    ``.tflite`` records of itself, since a file cannot hold its own hash."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    metadata = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
    digest = hashlib.sha256()
    for i in range(model.BuffersLength()):
        if i in metadata:
            continue
        buffer = model.Buffers(i)
        if buffer.DataLength():
            digest.update(buffer.DataAsNumpy().tobytes())
        elif buffer.Offset() > 1:  # a large model's buffers live after the flatbuffer
            digest.update(data[buffer.Offset():buffer.Offset() + buffer.Size()])
    return digest.hexdigest()


def _read_tflite_metadata(path: Path) -> dict[str, str]:
    """The ``alphanet_zoo/config`` and ``alphanet_zoo/export`` metadata buffers of a TFLite flatbuffer, refused
    when its weights are not those whose sha256 it recorded."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        raise InputError(f"reading {path.name} needs LiteRT: pip install 'alphanet_zoo[litert]'") from None
    data = path.read_bytes()
    try:
        model = schema.Model.GetRootAs(data, 0)
        names = {TFLITE_METADATA[k]: k for k in TFLITE_METADATA}
        names[TFLITE_CONTENT_KEY] = TFLITE_CONTENT_KEY
        found = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            key = names.get((entry.Name() or b"").decode("utf-8", errors="replace"))
            if key is not None:
                found[key] = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode("utf-8", errors="replace")
        recorded = found.pop(TFLITE_CONTENT_KEY, None)
        actual = tflite_content_sha256(data) if recorded is not None else None
    except Exception as e:  # a corrupt flatbuffer raises IndexError, struct.error...
        raise InputError(f"{path} is not a readable TFLite file: {type(e).__name__}") from None
    if recorded is not None and recorded != actual:
        raise InputError(f"{path}: its weights are not those it was exported with (sha256 {actual[:12]}..., "
                         f"recorded {recorded[:12]}...): a damaged file; export it again")
    return found


def _read_ir_rt_info(path: Path) -> dict[str, str]:
    """``rt_info/alphanet_zoo/{config,export}`` of an IR ``.xml``, read as XML (OpenVINO not needed)."""
    import xml.etree.ElementTree as ET

    if path.stat().st_size > MAX_XML_BYTES:
        raise InputError(f"{path} is larger than {MAX_XML_BYTES >> 20} MiB: not an OpenVINO IR .xml this package wrote")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise InputError(f"{path} is not a readable OpenVINO IR (.xml): {e}") from None
    if root.tag != "net":
        raise InputError(f"{path} is not an OpenVINO IR: its root element is <{root.tag}>, not <net>")
    section = root.find(f"rt_info/{OPENVINO_SECTION}")
    found = {}
    if section is not None:
        for key in (CONFIG_KEY, EXPORT_KEY):
            element = section.find(key)
            if element is not None and element.get("value") is not None:
                found[key] = element.get("value")
    return found


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The record of an exported file (ONNX, OpenVINO IR ``.xml``, TorchScript, pt2, ``.pte``, ``.tflite``), as
    written and validated."""
    path = Path(path)
    fmt = file_format(path)
    entries = _read_entries(path, fmt)
    if CONFIG_KEY not in entries:
        where = {"onnx": f"'{CONFIG_KEY}' metadata", "openvino": f"rt_info {OPENVINO_SECTION}/{CONFIG_KEY}",
                 "tflite": f"metadata {TFLITE_METADATA[CONFIG_KEY]}",
                 "executorch": f"record {sidecar_path(path).name} beside it"}.get(
            fmt, f"{TORCHSCRIPT_METADATA_FILE} metadata")
        raise InputError(f"{path} has no {where} (not exported by alphanet-export?)")
    what = f"{path}: metadata '{CONFIG_KEY}'"
    data = parse_json(entries[CONFIG_KEY], what)
    ModelRecord.from_dict(data, what)  # validates every field
    return data


def read_export_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """How an exported file was made (precision, agreement, auto's choice, runtime settings), or None
    for a file without that entry (an older export, or one made by other tools)."""
    path = Path(path)
    entries = _read_entries(path, file_format(path))
    if EXPORT_KEY not in entries:
        return None
    data = parse_json(entries[EXPORT_KEY], f"{path}: metadata '{EXPORT_KEY}'")
    if not isinstance(data, dict):
        raise InputError(f"{path}: metadata '{EXPORT_KEY}' must be a JSON object")
    return data
