"""Our sandwich step side by side with the official AlphaNet implementation's, on the same weights.

    python benchmarks/bench_train_official.py --official-src PATH [PATH ...] [--repeats 5]
        [--threads 1 2] [--batch 8] [--json]

``--official-src`` names checkouts of the authors' code, searched in order for ``models/``,
``utils/``, ``solver/`` (the AlphaNet repository has them; its public snapshot may not, in which
case add an AttentiveNAS checkout, whose ``models/`` builds the same supernet) and ``loss_ops.py``
and ``configs/train_alphanet_models.yml`` (AlphaNet). Nothing of that code is part of this
package: it is imported from the given folders at run time, for this measurement only.

Both implementations start from one set of weights (the parity data's deterministic, well-scaled
salt-0 weights of ``tests/parity/make_official_checkpoint.py``, loaded into ours through the
official-layout reader; an untrained initialisation's logits are so nearly uniform that the adaptive
loss's choice between its two alphas becomes a tie decided by rounding), take the same batch and the same four subnets
(largest, two random, smallest), and run one step as the authors' ``train_alphanet.py`` does:
label-smoothed cross entropy on the largest, the adaptive alpha-divergence against its detached
logits for the others, gradients summed, clipped to [-1, 1] by value, one Nesterov SGD step; dropout
and drop-connect off (as in the parity data). Before timing, the first step's four losses of each
variant are compared with the official ones (they must agree: same computation). Each variant runs
in a process of its own, as it would in practice: the official step in one untouched by our
settings, ours in the training layout with the allocator setting ``alphanet-train`` makes
(`alphanet_zoo.allocator.keep_freed_memory`). Variants are timed one at a time, interleaved, the
order rotating each repeat, after one warm-up step each. Reported: median and
min..max seconds per step and the speed-up over the official step, per thread count.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from alphanet_zoo import Supernet
from alphanet_zoo.allocator import keep_freed_memory
from alphanet_zoo.train import build_optimizer, sample_sandwich, sandwich_step, use_training_layout

OFFICIAL_CONFIG = "configs/train_alphanet_models.yml"
PARITY = Path(__file__).resolve().parents[1] / "tests" / "parity"


def import_official(sources: list[Path]):
    """The official modules, imported from the given checkouts."""
    needed = {"models": "models/attentive_nas_dynamic_model.py", "loss_ops": "loss_ops.py",
              "solver": "solver/build.py", "utils": "utils/config.py", "config": OFFICIAL_CONFIG}
    found = {}
    for what, rel in needed.items():
        hit = next((s for s in sources if (s / rel).is_file()), None)
        if hit is None:
            sys.exit(f"--official-src: none of {', '.join(map(str, sources))} has {rel}")
        found[what] = hit
    for path in dict.fromkeys(str(found[w]) for w in ("models", "loss_ops", "solver", "utils")):
        sys.path.insert(0, path)
    import loss_ops  # noqa: E402 - the official modules, from the folders just added
    from models.model_factory import create_model
    from solver.build import build_optimizer as official_optimizer
    from utils.config import setup
    args = setup(str(found["config"] / OFFICIAL_CONFIG))
    return args, create_model, official_optimizer, loss_ops


class OfficialRunner:
    """The authors' step: their supernet, losses, clipping and optimizer (train_alphanet.py's loop)."""

    name = "official"

    def __init__(self, model, args, official_optimizer, loss_ops) -> None:
        self.model, self.args = model, args
        self.optimizer = official_optimizer(args, model)
        self.ce = loss_ops.CrossEntropyLossSmooth(args.label_smoothing)
        self.kd = loss_ops.AdaptiveLossSoft(args.alpha_min, args.alpha_max, args.iw_clip)
        self.steps: list[float] = []

    def step(self, images, targets, archs) -> list[float]:
        model = self.model
        model.train()
        self.optimizer.zero_grad()
        losses, teacher = [], None
        for arch in archs:
            model.set_active_subnet(**arch.to_dict())
            model.set_dropout_rate(0, 0, True)
            output = model(images)
            loss = self.ce(output, targets) if teacher is None else self.kd(output, teacher)
            loss.backward()
            if teacher is None:
                teacher = output.detach().clone()
            losses.append(loss.item())
        torch.nn.utils.clip_grad_value_(model.parameters(), self.args.grad_clip_value)
        self.optimizer.step()
        return losses


class OurRunner:
    """``alphanet_zoo.train.sandwich_step`` on our supernet, as given or in the training layout
    (as ``alphanet-train`` runs it)."""

    def __init__(self, supernet: Supernet, layout: bool) -> None:
        self.name = TRAINING_LAYOUT if layout else AS_GIVEN
        self.supernet = supernet
        if layout:
            use_training_layout(self.supernet, torch.device("cpu"))
        self.optimizer = build_optimizer(self.supernet, lr=0.1)

    def step(self, images, targets, archs) -> list[float]:
        return sandwich_step(self.supernet, images, targets, archs, self.optimizer)["losses"]


OFFICIAL, AS_GIVEN, TRAINING_LAYOUT = "official", "ours, as given", "ours, training layout"
VARIANTS = (OFFICIAL, AS_GIVEN, TRAINING_LAYOUT)


def _runner(variant: str, sources: list[Path]):
    """One variant's runner, every one from the parity data's salt-0 weights."""
    args, create_model, official_optimizer, loss_ops = import_official(sources)
    sys.path.insert(0, str(PARITY))
    from make_official_checkpoint import tensor_for
    model = create_model(args)
    state = {"module." + k: tensor_for("module." + k, tuple(v.shape)) for k, v in model.state_dict().items()}
    if variant == OFFICIAL:
        model.load_state_dict({k[len("module."):]: v for k, v in state.items()})
        return OfficialRunner(model, args, official_optimizer, loss_ops)
    return OurRunner(Supernet.from_state_dict(state, "the official supernet's initial weights"),
                     variant == TRAINING_LAYOUT)


def _inputs(batch: int):
    """The batch and the four subnets every variant takes (the same in every process)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=generator)
    targets = torch.randint(0, 1000, (batch,), generator=generator)
    return images, targets, sample_sandwich(random.Random(0), 4)


def _worker(conn, variant: str, sources: list[Path], threads: int, batch: int) -> None:
    """One variant in a process of its own, as each runs in practice: the official step untouched by
    our process settings, ours in the training layout with the allocator setting alphanet-train makes.
    Answers the warm-up step's losses, then one step time per request."""
    torch.set_num_threads(threads)
    if variant == TRAINING_LAYOUT:
        keep_freed_memory()
    runner = _runner(variant, sources)
    inputs = _inputs(batch)
    conn.send(runner.step(*inputs))
    while conn.recv():
        start = time.perf_counter()
        runner.step(*inputs)
        conn.send(time.perf_counter() - start)


def bench(sources: list[Path], threads: int, repeats: int, batch: int) -> tuple[list[dict], list[dict]]:
    context = multiprocessing.get_context("spawn")
    workers = {}
    for variant in VARIANTS:
        parent, child = context.Pipe()
        process = context.Process(target=_worker, args=(child, variant, sources, threads, batch), daemon=True)
        process.start()
        workers[variant] = (parent, process)
    try:
        first = {v: workers[v][0].recv() for v in VARIANTS}  # the warm-up step, checked
        agreement = [{"variant": v, "losses": first[v], "max_rel_diff_vs_official": max(
            abs(a - b) / max(abs(b), 1e-6) for a, b in zip(first[v], first[OFFICIAL]))} for v in VARIANTS]
        steps: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for i in range(repeats):
            for v in VARIANTS[i % len(VARIANTS):] + VARIANTS[:i % len(VARIANTS)]:  # one at a time, rotating
                workers[v][0].send(True)
                steps[v].append(workers[v][0].recv())
    finally:
        for parent, process in workers.values():
            parent.send(False)
            process.join(60)
    base = statistics.median(steps[OFFICIAL])
    rows = [{"variant": v, "threads": threads, "batch": batch, "repeats": repeats,
             "step_s_median": statistics.median(steps[v]), "step_s_min": min(steps[v]), "step_s_max": max(steps[v]),
             "speedup_vs_official": base / statistics.median(steps[v])} for v in VARIANTS]
    return rows, agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", type=Path, nargs="+", required=True,
                        help="checkouts of the official AlphaNet (and AttentiveNAS) code")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    import_official(args.official_src)  # a missing module is named before any process starts
    rows, agreement = [], []
    for t in dict.fromkeys(args.threads):
        r, a = bench(args.official_src, t, args.repeats, args.batch)
        rows += r
        agreement += [dict(x, threads=t) for x in a]
    if args.json:
        print(json.dumps({"first_step": agreement, "results": rows}, indent=2))
        return
    for a in agreement:
        values = " ".join(f"{v:.6f}" for v in a["losses"])
        print(f"first step, {a['threads']} threads, {a['variant']:<24} losses {values}"
              f"  (max rel. diff vs official {a['max_rel_diff_vs_official']:.1e})")
    print(f"{'variant':<26}{'threads':>8}{'batch':>7}{'median s/step':>15}{'min..max':>16}{'x official':>12}")
    for r in rows:
        span = f"{r['step_s_min']:.2f}..{r['step_s_max']:.2f}"
        print(f"{r['variant']:<26}{r['threads']:>8}{r['batch']:>7}{r['step_s_median']:>15.3f}{span:>16}"
              f"{r['speedup_vs_official']:>12.2f}")


if __name__ == "__main__":
    main()
