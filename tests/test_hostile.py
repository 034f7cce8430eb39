"""Hostile inputs and faults, through the installed commands as a user or an attacker would run them.

Every case asserts the exit status, exactly one error line on stderr and no traceback, that nothing
was written (or the previous file is intact), and, where memory is the attack, a bound: the command
runs under ``resource.setrlimit(RLIMIT_AS)`` at the limit a run on an ordinary photo needs plus
about a gigabyte, so an image that made the package allocate gigabytes fails the test.
Disk-full and read-only folders are real: a tiny or read-only tmpfs mounted in a private mount
namespace (``unshare -m``), when the machine allows it.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # every test here runs commands in subprocesses under limits

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PHOTO = REPO / "tests" / "parity" / "photo.png"
MEMORY_LIMIT = int(4.5 * 2 ** 30)  # address space: a photo's run needs about 3.5 GiB (torch's libraries)


def run(prog: str, *args, memory: int | None = None, timeout: float = 300, cwd=None) -> subprocess.CompletedProcess:
    def limits():
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("ALPHANET_DEBUG", None)
    return subprocess.run([str(BIN / prog), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=limits, env=env, cwd=cwd)


def assert_one_error(done: subprocess.CompletedProcess, prog: str, status: int, *fragments: str) -> str:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{prog}: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one tiny (incomplete) IDAT."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    Image.new("RGB", (100_000, 1), (120, 30, 200)).save(root / "wide.png")  # 348 bytes, 1 x 100000
    Image.new("RGB", (1, 100_000), (20, 130, 200)).save(root / "tall.png")
    (root / "over_limit.png").write_bytes(png_header(9000, 9000))  # 81 MP: over the package's limit
    (root / "bomb.png").write_bytes(png_header(40_000, 40_000))  # 1.6 GP: over Pillow's bomb limit too
    Image.open(PHOTO).convert("RGB").save(root / "photo.jpg", quality=90)
    (root / "truncated.jpg").write_bytes((root / "photo.jpg").read_bytes()[:2000])
    (root / "text.jpg").write_text("not an image at all")
    (root / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "huge.json").write_text(" " * (5 << 20) + "{}")
    (root / "nan.json").write_text('{"resolution": NaN}')
    return root


@pytest.fixture(scope="module")
def memory_bound():
    """The address-space limit, once a run on an ordinary photo is seen to fit under it."""
    done = run("alphanet-predict", PHOTO, "--arch", "a0", "--weights", "random", memory=MEMORY_LIMIT)
    if done.returncode != 0:
        pytest.skip(f"this machine needs more than {MEMORY_LIMIT >> 20} MiB of address space for an ordinary run")
    return MEMORY_LIMIT


@pytest.fixture(scope="module")
def val_folder(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    for synset, names in (("n01440764", ["wide.png", "photo.jpg"]), ("n01443537", ["tall.png"])):
        (root / synset).mkdir()
        for name in names:
            shutil.copy(files / name, root / synset / name)
    return root


# ---- images --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("image", ["wide.png", "tall.png"])
def test_extreme_aspect_ratios_are_classified_within_bounded_memory(files, memory_bound, image):
    done = run("alphanet-predict", files / image, "--arch", "a0", "--weights", "random", "--json",
               memory=memory_bound)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["top"]) == 5


def test_eval_with_extreme_images_stays_bounded(val_folder, official_checkpoint, memory_bound, tmp_path):
    out = tmp_path / "r.json"
    done = run("alphanet-eval", "--arch", "a0", "--weights", official_checkpoint, "--data", val_folder,
               "--workers", "0", "--batch-size", "2", "--out", out, memory=memory_bound)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["images"] == 3


@pytest.mark.parametrize("image, fragment", [
    ("over_limit.png", "9000x9000 is 81,000,000 pixels, over the limit"),
    ("bomb.png", "bomb.png"),
    ("truncated.jpg", "truncated.jpg"), ("text.jpg", "cannot identify image file"),
])
def test_a_bad_image_is_one_line_naming_it(files, memory_bound, image, fragment):
    done = run("alphanet-predict", files / image, "--arch", "a0", "--weights", "random", memory=memory_bound)
    assert_one_error(done, "alphanet-predict", 2, f"cannot read image {files / image}", fragment)


def test_eval_skips_and_counts_bad_images_within_bounded_memory(files, val_folder, official_checkpoint,
                                                                memory_bound, tmp_path):
    data = tmp_path / "val"
    shutil.copytree(val_folder, data)
    for name in ("over_limit.png", "bomb.png", "text.jpg"):
        shutil.copy(files / name, data / "n01443537" / name)
    args = ["--arch", "a0", "--weights", official_checkpoint, "--data", data, "--workers", "0", "--batch-size", "2"]
    done = run("alphanet-eval", *args, memory=memory_bound)
    assert_one_error(done, "alphanet-eval", 2, "cannot read image")
    out = tmp_path / "r.json"
    done = run("alphanet-eval", *args, "--skip-bad-images", "--out", out, memory=memory_bound)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["images"] == 3 and result["bad_images"] == 3
    assert sorted(Path(b["path"]).name for b in result["bad_image_files"]) == ["bomb.png", "over_limit.png",
                                                                             "text.jpg"]


# ---- JSON inputs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fragment", [("deep.json", "nested too deeply"), ("huge.json", "larger than 4 MiB"),
                                            ("nan.json", "not valid JSON")])
def test_hostile_architecture_files(files, tmp_path, name, fragment):
    done = run("alphanet-export", "--arch", files / name, "--weights", "random", "--out", tmp_path / "m.onnx")
    assert_one_error(done, "alphanet-export", 2, name, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("config", ["deep", "junk_name", "metrics_as_text"])
def test_hostile_config_json_in_a_weights_folder(supernet, files, tmp_path, config):
    folder = supernet.extract("a0").save_pretrained(tmp_path / "w")
    record = json.loads((folder / "config.json").read_text())
    if config == "deep":
        (folder / "config.json").write_text((files / "deep.json").read_text())
    else:
        record.update({"name": {"evil": 1}} if config == "junk_name" else
                      {"measured": [{"top1": "99%", "images": 1, "data": "x"}]})
        (folder / "config.json").write_text(json.dumps(record))
    done = run("alphanet-predict", PHOTO, "--weights", folder)
    assert_one_error(done, "alphanet-predict", 2, "config.json")


# ---- numeric flags -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value, fragment", [
    ("--calib-batches", "nan", "expected an integer"), ("--batch-size", "inf", "expected an integer"),
    ("--limit", "-1", "outside the allowed range"), ("--workers", "1e9", "expected an integer"),
    ("--seed", "99999999999999999999999", "outside the allowed range"),
])
def test_numeric_flags_of_eval(val_folder, flag, value, fragment):
    done = run("alphanet-eval", "--arch", "a0", "--weights", "random", "--data", val_folder, flag, value)
    assert_one_error(done, "alphanet-eval", 2, flag, fragment)


# ---- outputs ---------------------------------------------------------------------------------------------

def _namespace_available() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True)
    return probe.returncode == 0


NAMESPACES = shutil.which("unshare") is not None and _namespace_available()
needs_mounts = pytest.mark.skipif(not NAMESPACES, reason="no private mount namespaces (unshare -m) on this machine")


def in_tmpfs(mount_options: str, folder: Path, prepare: str, command: list, after: str) -> tuple[str, str, int]:
    """Run ``command`` with a fresh tmpfs (``mount_options``) on ``folder``, in a private mount namespace."""
    folder.mkdir(exist_ok=True)
    quoted = " ".join(f"'{c}'" for c in map(str, command))
    script = (f"set -e; mount -t tmpfs -o {mount_options} tmpfs '{folder}'; {prepare}; set +e; "
              f"{quoted} 2>/tmp/alphanet_stderr_$$; echo \"rc=$?\"; {after}; cat /tmp/alphanet_stderr_$$ >&2; "
              f"rm -f /tmp/alphanet_stderr_$$")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=300, env=env)
    code = int(next(line for line in done.stdout.splitlines() if line.startswith("rc="))[3:])
    return done.stdout, done.stderr, code


@needs_mounts
def test_a_full_disk_is_one_line_and_leaves_the_previous_folder_intact(official_checkpoint, tmp_path):
    out = tmp_path / "disk"
    stdout, stderr, code = in_tmpfs(
        "size=4m", out, f"mkdir -p '{out}/w/a0'; echo previous > '{out}/w/a0/config.json'",
        [BIN / "alphanet-extract", "--supernet", official_checkpoint, "--arch", "a0", "--out", out / "w"],
        f"ls -a '{out}/w/a0'; cat '{out}/w/a0/config.json'")
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and "Traceback" not in stderr
    assert stdout.split().count("previous") == 1  # the old config.json, untouched
    listing = stdout.split("rc=")[1].split()[1:]
    assert sorted(set(listing) - {".", "..", "previous"}) == ["config.json"]  # no temporary litter


@needs_mounts
def test_a_read_only_output_folder_is_refused_before_any_work(official_checkpoint, val_folder, tmp_path):
    out = tmp_path / "ro"
    stdout, stderr, code = in_tmpfs(
        "ro,size=64k", out, "true",
        [BIN / "alphanet-eval", "--arch", "a0", "--weights", official_checkpoint, "--data", val_folder,
         "--workers", "0", "--out", out / "r.json"], f"ls -a '{out}'")
    assert code == 2 and "not writable" in stderr and stderr.strip().count("\n") == 0, stderr
    assert "top-1" not in stdout  # refused before evaluating anything


def test_an_output_that_is_a_folder_or_under_a_file_is_refused(official_checkpoint, val_folder, tmp_path):
    (tmp_path / "afile").write_text("keep me")
    for out, fragment in ((tmp_path, "it is a folder"), (tmp_path / "afile" / "r.json", "not a folder")):
        done = run("alphanet-eval", "--arch", "a0", "--weights", official_checkpoint, "--data", val_folder,
                   "--workers", "0", "--out", out)
        assert_one_error(done, "alphanet-eval", 2, fragment)
    assert (tmp_path / "afile").read_text() == "keep me"
    done = run("alphanet-extract", "--supernet", official_checkpoint, "--arch", "a0", "--out", tmp_path / "afile")
    assert_one_error(done, "alphanet-extract", 2, "a file of that name exists")


def test_temporary_files_of_a_killed_writer_are_cleaned_by_the_next_run(official_checkpoint, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs, as a writer killed with SIGKILL leaves
    folder = tmp_path / "w" / "a0"
    folder.mkdir(parents=True)
    stale = [folder / f".{name}.{dead.pid}.abc123.tmp" for name in ("config.json", "model.safetensors")]
    for path in stale:
        path.write_bytes(b"half a file")
    alive = folder / f".README.md.{os.getpid()}.def456.tmp"  # a live writer's: left alone
    alive.write_bytes(b"in progress")
    done = run("alphanet-extract", "--supernet", official_checkpoint, "--arch", "a0", "--out", tmp_path / "w")
    assert done.returncode == 0, done.stderr
    assert not any(p.exists() for p in stale) and alive.exists()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["README.md", "config.json", "model.safetensors"]


def test_ctrl_c_and_sigterm_during_extraction_leave_no_partial_file(official_checkpoint, tmp_path):
    import time

    proc = subprocess.Popen([str(BIN / "alphanet-extract"), "--supernet", str(official_checkpoint), "--arch", "all",
                             "--out", str(tmp_path / "w")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "w" / "a1").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "alphanet-extract: interrupted"
    for folder in (tmp_path / "w").iterdir():  # each folder is whole or not there; no temporaries
        names = sorted(p.name for p in folder.iterdir())
        assert names in ([], ["README.md", "config.json", "model.safetensors"]), names
