"""Helpers for the training and search tests: tiny generated image folders, torchrun runs and their logs."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

# distinct, saturated colours: a class is learnable from a few dozen steps
_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 210, 40), (200, 50, 210), (40, 210, 220)]

#: ImageNet-1k synsets and their canonical class indices (the public ILSVRC-2012 class list: brambling,
#: Chihuahua, tabby cat, banana). Sorted, they are 0..3, which is not their ImageNet index: a training
#: that numbered a 1000-class supernet's synset folders in sorted order would show it.
SYNSETS = {"n01530575": 10, "n02085620": 151, "n02123045": 281, "n07753592": 954}


def make_image_folder(root: Path, classes: list[str], per_class: int, size: int = 40, seed: int = 0) -> Path:
    """An ImageFolder tree ``root/<class>/<i>.png`` of noisy solid-colour images, one colour per class."""
    rng = np.random.RandomState(seed)
    for c, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = size + rng.randint(0, 9), size + rng.randint(0, 9)
            base = np.array(_COLOURS[c % len(_COLOURS)], dtype=np.float32)
            pixels = base + rng.normal(0, 25, (h, w, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def read_log(path: Path) -> list[dict]:
    """The JSON-lines training log as a list of records (a half-written line fails the test)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def events(log: list[dict], name: str) -> list[dict]:
    return [r for r in log if r["event"] == name]


def train_losses(log: list[dict]) -> list[tuple[int, list[float]]]:
    """(global step, losses) of every ``train`` record, in log order (a step logged twice shows twice)."""
    return [(r["global_step"], r["losses"]) for r in log if r["event"] == "train"]


def state_digest(state: dict) -> str:
    """sha256 over the keys in sorted order, each followed by its tensor's bytes: written here, not imported,
    to check what the trainer says it resumed from."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def train_args(out: Path, data: Path, *overrides: str) -> list[str]:
    """``alphanet-train`` arguments for the tiny recipe on ``data/train`` and ``data/val``."""
    return ["--config", "tiny", f"data.train={data / 'train'}", f"data.val={data / 'val'}", f"output_dir={out}",
            *overrides]


def start_torchrun(out: Path, data: Path, *overrides: str, nproc: int = 2) -> subprocess.Popen:
    """``torchrun --standalone`` of alphanet-train, each process's output in ``out.parent/<out.name>.logs``."""
    logs = out.parent / f"{out.name}.logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "--redirects", "3", "--log-dir", str(logs), "-m", "alphanet_zoo.commands.train",
               *train_args(out, data, *overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("ALPHANET_DEBUG", None)
    return subprocess.Popen(command, cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def rank_output(out: Path, rank: int, stream: str = "stderr") -> str:
    """What process ``rank`` of the latest torchrun run into ``out`` wrote on ``stream``."""
    files = sorted((out.parent / f"{out.name}.logs").glob(f"*/attempt_*/{rank}/{stream}.log"),
                   key=lambda p: p.stat().st_mtime)
    return files[-1].read_text() if files else ""


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for ``proc``; its output. A run that does not end in ``timeout`` s is killed and fails the test."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_job(proc)
        out, _ = proc.communicate()
        raise AssertionError(f"the run did not end in {timeout} s:\n{out[-3000:]}") from None
    return out


def workers(proc: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of the training processes torchrun ``proc`` started (each in a session of its own)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) == proc.pid:  # its parent is torchrun
            env = dict(item.split(b"=", 1) for item in environ if b"=" in item)
            if b"RANK" in env:
                found[int(env[b"RANK"])] = int(entry.name)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_job(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to torchrun's training processes and to torchrun, as a scheduler ends a whole job."""
    for pid in workers(proc).values():
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def wait_until(condition: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}:\n{proc.communicate()[0][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def logged_step(out: Path) -> int:
    """The last training step in ``out/log.jsonl`` so far (0 if none)."""
    path = out / "log.jsonl"
    if not path.is_file():
        return 0
    steps = [json.loads(line).get("global_step", 0) for line in path.read_text().splitlines()
             if line.endswith("}") and '"event": "train"' in line]
    return max(steps, default=0)
