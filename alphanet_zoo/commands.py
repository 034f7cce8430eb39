"""Console commands of the zoo itself: ``alphanet-models``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from ._cli import cli_main
from .flops import count_flops
from .registry import MODELS


def _live_params(info) -> int:
    """Parameter count of a model, from its layout (no model is built)."""
    import torch

    from .model import AlphaNet

    with torch.device("meta"):
        return sum(p.numel() for p in AlphaNet(info.arch).parameters())


def model_table() -> list[dict]:
    """One row per published model: name, resolution, MFLOPs (published and counted), params, top-1."""
    return [{"name": name, "official_name": info.official_name, "resolution": info.arch.resolution,
             "mflops_published": info.published_mflops, "mflops": round(count_flops(info.arch), 2),
             "params": _live_params(info), "top1_published": info.published_top1,
             "top5_published": info.published_top5}
            for name, info in MODELS.items()]


@cli_main("alphanet-models")
def models_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alphanet-models",
                                     description="List the AlphaNet models: resolution, MFLOPs, parameters, "
                                                 "published ImageNet top-1.")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    rows = model_table()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<9}{'official name':<19}{'res':>5}{'MFLOPs':>9}{'(paper)':>9}{'params':>12}{'top-1 %':>9}")
    for r in rows:
        print(f"{r['name']:<9}{r['official_name']:<19}{r['resolution']:>5}{r['mflops']:>9.2f}"
              f"{r['mflops_published']:>9}{r['params']:>12,}{r['top1_published']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(models_main())
