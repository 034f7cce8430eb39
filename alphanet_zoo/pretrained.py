"""Hub-ready model folders: ``config.json`` (the `ModelRecord`), ``model.safetensors`` and a ``README.md`` card.

`PretrainedMixin` gives `AlphaNet` ``save_pretrained(folder)`` and ``push_to_hub(repo_id)``, after
huggingface_hub's ``ModelHubMixin`` conventions; the card is a ``huggingface_hub.ModelCard``. The
card's model-index (the Hub's metadata) lists only accuracy measured on these weights; the paper's
numbers for the architecture appear in the card's text, labelled as such.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ._io import atomic_path, check_writable_folder, make_folder, save_safetensors
from .hub import push_folder
from .record import ModelRecord, Origin
from .registry import PAPER, PAPER_URL

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LIBRARY_NAME = "alphanet_zoo"


def _title(record: ModelRecord) -> str:
    return f"AlphaNet-{record.name.upper()}" if record.name else "AlphaNet (custom architecture)"


def _cell(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def model_card(record: ModelRecord, repo_id: str | None = None):
    """The ``huggingface_hub.ModelCard`` of a model folder, from its record."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    title = _title(record)
    results = []
    for m in record.measured:
        for metric, value in (("top-1", m.top1), ("top-5", m.top5)):
            if value is not None:
                results.append(EvalResult(task_type="image-classification", dataset_type="imagenet-1k",
                                          dataset_name=m.data, dataset_split="validation", metric_type="accuracy",
                                          metric_name=f"{metric} accuracy (measured on these weights)",
                                          metric_value=value))
    data = ModelCardData(license=record.license, library_name=LIBRARY_NAME, pipeline_tag="image-classification",
                         tags=["image-classification", "alphanet", "neural-architecture-search"],
                         datasets=["imagenet-1k"] if record.label_set else None,
                         model_name=title if results else None, eval_results=results or None)
    arch, pre = record.arch, record.preprocessing
    load_id = f"hf-hub:{repo_id}" if repo_id else "<this folder>"
    warnings = []
    if record.needs_calibration:
        warnings.append("> **BatchNorm not calibrated.** These weights were extracted from a supernet without "
                        "re-estimating BatchNorm statistics; their accuracy is far below what the architecture "
                        "reaches once calibrated (`alphanet-extract --calib-data TRAIN_DIR`).")
    if record.origin is Origin.RANDOM:
        warnings.append("> **Untrained.** These weights are a random initialisation.")
    body = [f"# {title}", "", *(w + "\n" for w in warnings),
            f"A standalone AlphaNet subnet for image classification ({record.mflops:.2f} MFLOPs, "
            f"{record.params:,} parameters, input {arch.resolution}x{arch.resolution}), from {PAPER} ({PAPER_URL}).",
            "", "## Use", "", "```python", "import alphanet_zoo", "from PIL import Image", "",
            f"model = alphanet_zoo.load({load_id!r})",
            "print(alphanet_zoo.predict(model, [Image.open('cat.jpg')], topk=5))", "```", "",
            "## Accuracy", "", "| | top-1 % | top-5 % | images | MFLOPs |", "| --- | --- | --- | --- | --- |"]
    if record.published:
        p = record.published
        body.append(f"| paper (published for this architecture, not measured on these weights) | "
                    f"{_cell(p.top1)} | {_cell(p.top5)} | - | {_cell(p.mflops)} |")
    for m in record.measured:
        batchnorm = "calibrated" if m.calibrated else "as stored"
        body.append(f"| measured on these weights ({m.data}, BatchNorm {batchnorm}) "
                    f"| {m.top1:.2f} | {_cell(m.top5, '.2f')} | {m.images} | {record.mflops:.2f} |")
    if not record.measured:
        body.append("| measured on these weights | not measured yet (`alphanet-eval`) | | | |")
    body += ["", "MFLOPs are multiply-adds of conv and linear layers (the paper's convention).", "",
             "## Preprocessing", "",
             f"PIL {pre.interpolation} resize of the short side to {pre.resize_size}, centre crop {pre.crop_size}, "
             f"to tensor, normalise (mean {[round(v, 4) for v in pre.mean]}, std {[round(v, 4) for v in pre.std]}), "
             f"then a {pre.interpolation} resize to {pre.resolution}: `alphanet_zoo.transforms(model)`.", "",
             "## Architecture", "", "```json", json.dumps(arch.to_dict()), "```", "",
             "## Provenance", "", f"Source: {record.source}.", ""]
    if record.calibration:
        c = record.calibration
        body.append(f"BatchNorm statistics re-calibrated after extraction on {c.num_batches} batches of "
                    f"{c.batch_size} images from {c.data} (seed {c.seed}): {c.recipe}.")
    else:
        body.append("BatchNorm statistics: not re-calibrated.")
    unlicensed = "none (a random initialisation is nobody's work)" if record.origin is Origin.RANDOM else "not stated"
    body += ["", "## License", "", f"Weights: {record.license or unlicensed}."]
    if (record.license or "").lower() == "cc-by-nc-4.0":
        body.append("The AlphaNet weights are the authors' (Wang et al.), released under CC-BY-NC 4.0: "
                    "non-commercial use only, with attribution.")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def _weights_metadata(config: dict) -> dict[str, str]:
    return {"format": "pt", "library": LIBRARY_NAME, "architecture": json.dumps(config["architecture"]),
            "num_classes": str(config["num_classes"])}


class PretrainedMixin:
    """``save_pretrained`` and ``push_to_hub`` for `AlphaNet` (huggingface_hub's conventions)."""

    def save_pretrained(self, save_directory: str | os.PathLike, *, repo_id: str | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

        The folder appears whole or not at all: a new folder is written under a temporary name
        beside it and renamed once into place. In an existing folder the files are written under
        temporary names first; only when all are complete are the old weights removed and the files
        renamed, the weights last, so the folder holds the old model, the new one, or (interrupted
        in between) no weights, which loaders refuse as no model folder. A failure while writing
        (disk full) leaves the folder as it was. Returns the folder; `OutputError` if it cannot be
        written.
        """
        folder = check_writable_folder(save_directory, "model folder")
        make_folder(folder.parent, "model folder's parent")
        record = self.pretrained_cfg
        config = record.to_dict()
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        files = {WEIGHTS_NAME: lambda path: save_safetensors(state, path, _weights_metadata(config)),
                 CONFIG_NAME: lambda path: path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8"),
                 CARD_NAME: lambda path: path.write_text(str(model_card(record, repo_id)), encoding="utf-8")}
        if not folder.exists():
            with atomic_path(folder, folder=True) as tmp:
                for name, write in files.items():
                    write(tmp / name)
            return folder
        with atomic_path(folder / WEIGHTS_NAME) as weights_tmp:  # renamed last, when it exits
            files[WEIGHTS_NAME](weights_tmp)
            with atomic_path(folder / CONFIG_NAME) as config_tmp, atomic_path(folder / CARD_NAME) as card_tmp:
                files[CONFIG_NAME](config_tmp)
                files[CARD_NAME](card_tmp)
                # the old weights must never pair with the new config: no weights until the new ones land
                (folder / WEIGHTS_NAME).unlink(missing_ok=True)
        return folder

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload AlphaNet model", private: bool | None = None,
                    token: str | None = None, revision: str | None = None, create_pr: bool = False,
                    endpoint: str | None = None) -> str:
        """Save to a temporary folder and upload it to the Hub repo ``repo_id`` (created if missing).

        Returns the commit URL; any failure is one `WeightsUnavailableError`.
        """
        tmp = Path(tempfile.mkdtemp(prefix="alphanet_push_"))
        try:
            self.save_pretrained(tmp, repo_id=repo_id)
            return push_folder(tmp, repo_id, commit_message=commit_message, private=private, token=token,
                               revision=revision, create_pr=create_pr, endpoint=endpoint)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
