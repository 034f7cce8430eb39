"""Hub-ready model folders: ``config.json``, ``model.safetensors`` and a ``README.md`` model card.

`PretrainedMixin` gives `AlphaNet` ``save_pretrained(folder)`` and ``push_to_hub(repo_id)``, after
huggingface_hub's ``ModelHubMixin`` conventions. What a folder holds beyond the weights travels in
``model.pretrained_cfg`` (timm's name for it): the model name, calibration recipe, metrics, source.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ._io import atomic_path
from .registry import PAPER, PAPER_URL, WEIGHTS_LICENSE

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_VERSION = 1
LIBRARY_NAME = "alphanet_zoo"


def model_config(model: Any) -> dict[str, Any]:
    """The ``config.json`` content of a model: architecture, classes, preprocessing, metrics, provenance."""
    from . import __version__
    from .flops import count_flops
    from .registry import MODELS
    from .transforms import preprocessing_for

    cfg = dict(model.pretrained_cfg or {})
    name = cfg.get("name")
    info = MODELS.get(name)
    if info is not None and info.arch != model.arch:
        info = None  # a name that does not describe this architecture carries no published numbers
    metrics = dict(cfg.get("metrics") or {})
    metrics.setdefault("mflops", round(count_flops(model.arch, model.num_classes), 6))
    metrics.setdefault("params", sum(p.numel() for p in model.parameters()))
    if info is not None:
        metrics.setdefault("published", {"top1": info.published_top1, "top5": info.published_top5,
                                         "mflops": info.published_mflops})
    return {
        "library": LIBRARY_NAME, "library_version": __version__, "format_version": FORMAT_VERSION,
        "name": name, "official_name": info.official_name if info else None,
        "architecture": model.arch.to_dict(), "num_classes": model.num_classes,
        "labels": cfg.get("labels", "imagenet-1k" if model.num_classes == 1000 else None),
        "preprocessing": preprocessing_for(model).to_dict(),
        "metrics": metrics,
        "calibration": cfg.get("calibration"),
        "license": cfg.get("license", WEIGHTS_LICENSE),
        "source": cfg.get("source"),
        "paper": PAPER,
    }


def _yaml_str(value: Any) -> str:
    return json.dumps(value)  # a JSON string literal is valid YAML


def model_card(config: dict[str, Any], repo_id: str | None = None) -> str:
    """A Hub model card (YAML front matter with a model-index) for a folder's ``config.json``."""
    name = config.get("name") or "custom"
    title = f"AlphaNet-{name.upper()}" if config.get("name") else "AlphaNet (custom architecture)"
    metrics = config.get("metrics") or {}
    published = metrics.get("published") or {}
    measured = metrics.get("imagenet") or {}
    results = []
    for label, source in (("published", published), ("measured", measured)):
        for key in ("top1", "top5"):
            if source.get(key) is not None:
                results.append((f"{key[:3]}-{key[3:]} accuracy ({label})", source[key]))
    lines = ["---", f"license: {config.get('license', WEIGHTS_LICENSE)}", f"library_name: {LIBRARY_NAME}",
             "pipeline_tag: image-classification",
             "tags:", "- image-classification", "- alphanet", "- neural-architecture-search", "- imagenet-1k",
             "datasets:", "- imagenet-1k"]
    if results:
        lines += ["model-index:", f"- name: {_yaml_str(title)}", "  results:", "  - task:",
                  "      type: image-classification", "    dataset:", "      name: ImageNet-1k",
                  "      type: imagenet-1k", "      split: validation", "    metrics:"]
        for label, value in results:
            lines += ["    - type: accuracy", f"      name: {_yaml_str(label)}", f"      value: {value}"]
    lines.append("---")
    arch = config["architecture"]
    pre = config["preprocessing"]
    calib = config.get("calibration")
    load_id = f"hf-hub:{repo_id}" if repo_id else (config.get("name") or "<folder>")
    body = [
        "", f"# {title}", "",
        f"A standalone AlphaNet subnet for ImageNet-1k classification ({metrics.get('mflops', 0):.2f} MFLOPs, "
        f"{metrics.get('params', 0):,} parameters, input {arch['resolution']}x{arch['resolution']}), "
        f"from {PAPER} ({PAPER_URL}).", "",
        "## Use", "", "```python", "import alphanet_zoo", "from PIL import Image", "",
        f"model = alphanet_zoo.load({load_id!r}, pretrained=True)",
        "print(alphanet_zoo.predict(model, [Image.open('cat.jpg')], topk=5))", "```", "",
        "## Numbers", "", "| | top-1 % | top-5 % | MFLOPs |", "| --- | --- | --- | --- |",
    ]
    if published:
        body.append(f"| paper | {published.get('top1', '-')} | {published.get('top5') or '-'} | "
                    f"{published.get('mflops', '-')} |")
    if measured:
        body.append(f"| measured (alphanet-eval) | {measured.get('top1', '-')} | {measured.get('top5', '-')} | "
                    f"{metrics.get('mflops', 0):.2f} |")
    body += ["", "MFLOPs are multiply-adds of conv and linear layers (the paper's convention).", "",
             "## Preprocessing", "",
             f"PIL {pre['interpolation']} resize of the short side to {pre['resize_size']}, centre crop "
             f"{pre['crop_size']}, to tensor, normalise (mean {[round(v, 4) for v in pre['mean']]}, std "
             f"{[round(v, 4) for v in pre['std']]}), then a {pre['interpolation']} resize to {pre['resolution']}: "
             f"`alphanet_zoo.transforms(model)`.", "",
             "## Architecture", "", "```json", json.dumps(arch), "```", ""]
    if calib:
        body += ["## Provenance", "", f"Source: {config.get('source') or 'unspecified'}.", "",
                 "BatchNorm statistics were re-calibrated after extraction: "
                 + ", ".join(f"{k} {v}" for k, v in calib.items()) + ".", ""]
    elif config.get("source"):
        body += ["## Provenance", "", f"Source: {config['source']}.", ""]
    body += ["## License", "",
             "The AlphaNet weights are the authors' (Wang et al.), released under CC-BY-NC 4.0: "
             "non-commercial use only, with attribution.", ""]
    return "\n".join(lines + body)


class PretrainedMixin:
    """``save_pretrained`` and ``push_to_hub`` for `AlphaNet` (huggingface_hub's conventions)."""

    pretrained_cfg: dict[str, Any] | None = None

    def save_pretrained(self, save_directory: str | os.PathLike, *, repo_id: str | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

        Each file is written atomically; the folder is created if needed. Returns the folder.
        """
        from safetensors.torch import save_file

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = model_config(self)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "library": LIBRARY_NAME,
                                                 "architecture": json.dumps(config["architecture"]),
                                                 "num_classes": str(self.num_classes)})
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        with atomic_path(folder / CARD_NAME) as tmp:
            tmp.write_text(model_card(config, repo_id), encoding="utf-8")
        return folder

    def push_to_hub(self, repo_id: str, *, commit_message: str = "Upload AlphaNet model", private: bool | None = None,
                    token: str | None = None, revision: str | None = None, create_pr: bool = False,
                    endpoint: str | None = None) -> str:
        """Save to a temporary folder and upload it to the Hub repo ``repo_id`` (created if missing).

        Returns the commit URL.
        """
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT"), token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="alphanet_push_"))
        try:
            self.save_pretrained(tmp, repo_id=repo_id)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message,
                                     revision=revision, create_pr=create_pr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return str(getattr(info, "commit_url", info))
