"""``alphanet-models``: the zoo's table (resolution, MFLOPs, parameters, the paper's top-1, weights here)."""
from __future__ import annotations

from typing import Sequence

from .._io import check_writable_file, write_json
from ..hub import cached_path
from ..pretrained import WEIGHTS_NAME
from ..registry import MODELS
from . import flags, running


def weights_status(name: str) -> str:
    """Whether a published model's weights can be had here: ``cached``, ``pinned`` (published, not
    cached) or ``not published`` (no pinned revision in the registry). Looks at the cache only."""
    pin = MODELS[name].weights
    revision = pin.revision or "main"
    if cached_path(pin.hub_repo, revision, WEIGHTS_NAME) is not None:
        return "cached"
    return "pinned" if pin.revision else "not published"


def model_table(names: Sequence[str] | None = None) -> list[dict]:
    """One row per published model: resolution, MFLOPs (published and counted), params, top-1, weights."""
    return [{"name": name, "official_name": info.official_name, "resolution": info.arch.resolution,
             "mflops_published": info.published_mflops, "mflops": round(info.mflops, 2), "params": info.params,
             "top1_published": info.published_top1, "top5_published": info.published_top5,
             "hub_repo": info.weights.hub_repo, "weights": weights_status(name)}
            for name, info in MODELS.items() if names is None or name in names]


@running.cli_main("alphanet-models")
def main(argv: Sequence[str] | None = None) -> int:
    parser = flags.command_parser(
        "alphanet-models", "List the AlphaNet models: resolution, MFLOPs, parameters, the paper's ImageNet top-1, "
                           "and whether weights are available here (cached, pinned on the Hub, or not published).",
        [flags.arch_flags(default="all"), flags.output_flags("also write the table as JSON to this file"),
         flags.json_flags()])
    args = parser.parse_args(argv)
    names = [name for name, _ in flags.parse_archs(args.arch)]
    if args.out:
        check_writable_file(args.out)
    rows = model_table(names)
    console = running.Console(args.json)
    console.json(rows)
    if args.out:
        write_json(args.out, rows)
    console.result(f"{'model':<9}{'official name':<19}{'res':>5}{'MFLOPs':>9}{'(paper)':>9}{'params':>12}"
                   f"{'top-1 %':>9}  weights")
    for r in rows:
        console.result(f"{r['name']:<9}{r['official_name']:<19}{r['resolution']:>5}{r['mflops']:>9.2f}"
                       f"{r['mflops_published']:>9}{r['params']:>12,}{r['top1_published']:>9.2f}  {r['weights']}")
    console.result("\nMFLOPs: multiply-adds of conv and linear layers (the paper's convention); top-1: the paper's. "
                   "No per-model weights are published yet: build them from the authors' supernet with "
                   "alphanet-extract. Weights: CC-BY-NC 4.0 (the authors').")
    return 0
