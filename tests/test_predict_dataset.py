"""Labelling a dataset: ``alphanet-predict`` over folders, globs and lists, streamed to JSON lines, CSV or Parquet,
resumed after Ctrl-C, SIGTERM and SIGKILL, split across torchrun processes; ``alphanet_zoo.predict_dataset``."""
from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alphanet_zoo
from _search_helpers import BIN, lines, one_thread, torchrun  # noqa: F401  (one_thread: a module fixture)
from alphanet_zoo._io import ExclusiveLock
from alphanet_zoo.commands import predict_main
from alphanet_zoo.data import collect_images
from alphanet_zoo.eval.prediction_table import Journal, parts_folder

COUNT = 13  # batches of 4: 4, 4, 4, 1


@pytest.fixture(scope="module")
def weights(tiny_model, tmp_path_factory) -> Path:
    return tiny_model.save_pretrained(tmp_path_factory.mktemp("w") / "tiny")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """13 JPEGs and PNGs of mixed sizes in a tree, one undecodable, plus files that are not to be labelled."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(COUNT - 1):
        folder = root / ("a" if i % 2 else "b/c")
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(40, 90, 2)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.{'jpg' if i % 3 else 'png'}")
    (root / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("x")
    (root / ".hidden.jpg").write_bytes((root / "a" / "im01.jpg").read_bytes())
    (root / "b" / "loop").symlink_to(root)
    return root


def expected_paths(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.suffix in (".jpg", ".png") and not p.name.startswith(".")
                  and "loop" not in p.parts)


def reference_rows(model, paths: list[str], topk: int = 5) -> list[dict]:
    rows = []
    for path in paths:
        try:
            (top,) = alphanet_zoo.predict(model, [path], topk=topk)
            rows.append({"path": path, "top": top})
        except alphanet_zoo.data.BadImageError as e:
            rows.append({"path": path, "error": e.reason})
    return rows


def assert_same_rows(rows: list[dict], reference: list[dict]) -> None:
    assert [r["path"] for r in rows] == [r["path"] for r in reference]
    for row, ref in zip(rows, reference):
        assert ("error" in row) == ("error" in ref), row["path"]
        if "top" in ref:
            assert [c["index"] for c in row["top"]] == [c["index"] for c in ref["top"]]
            assert [c["name"] for c in row["top"]] == [c["name"] for c in ref["top"]]
            assert [c["probability"] for c in row["top"]] == pytest.approx([c["probability"] for c in ref["top"]],
                                                                           abs=1e-5)


# ---- what is labelled ---------------------------------------------------------------------------------

def test_folders_are_walked_sorted_and_skip_what_is_not_an_image(images):
    found = collect_images([images])
    assert found.paths == expected_paths(images)
    assert found.skipped == {"hidden": 1, "not an image": 1, "folder reached twice (symlink loop or repeat)": 1}


def test_globs_lists_and_stdin(images, tmp_path, monkeypatch):
    pattern = str(images / "**" / "*.png")
    assert collect_images([pattern]).paths == sorted(p for p in expected_paths(images) if p.endswith(".png"))
    listed = [expected_paths(images)[3], str(tmp_path / "gone.jpg"), expected_paths(images)[0]]
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n\n")
    assert collect_images(files_from=tmp_path / "list.txt").paths == listed  # a list keeps its own order
    assert collect_images([listed[0]], files_from=io.StringIO(listed[0])).paths == [listed[0]] * 2  # as asked
    twice = collect_images([images / "a", str(images / "a" / "*.jpg")])  # reached twice: labelled once
    assert twice.skipped["found twice"] == len(list((images / "a").glob("*.jpg")))
    assert twice.paths == sorted(map(str, (images / "a").iterdir()))
    with pytest.raises(alphanet_zoo.errors.InputError, match="no file matches"):
        collect_images([str(images / "*.gif")])
    with pytest.raises(alphanet_zoo.errors.InputError, match="missing.jpg: file not found"):
        collect_images([str(tmp_path / "missing.jpg")])


def test_stdin_list_to_the_command(images, weights, tmp_path, monkeypatch, capsys):
    paths = expected_paths(images)[:3]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(paths) + "\n"))
    assert predict_main(["--files-from", "-", "--weights", str(weights), "--json", "--threads", "1"]) == 0
    assert [json.loads(line)["path"] for line in capsys.readouterr().out.splitlines()] == paths


# ---- the table ----------------------------------------------------------------------------------------

def read_table(path: Path) -> list[dict]:
    """A table back as rows ``{"path", "top"|"error"}``, each format through its own reader."""
    if path.suffix == ".jsonl":
        return lines(path)
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            flat = list(csv.DictReader(f))
        convert = {"index": int, "probability": float, "synset": str, "name": str}
    else:
        import pyarrow.parquet as pq

        flat = pq.read_table(path).to_pylist()
        convert = {k: (lambda v: v) for k in ("index", "probability", "synset", "name")}
    rows = []
    for f in flat:
        if f["error"]:
            rows.append({"path": f["path"], "error": f["error"]})
            continue
        k = sum(1 for key in f if key.endswith("_index"))
        rows.append({"path": f["path"], "top": [{field: convert[field](f[f"top{r}_{field}"])
                                                 for field in ("index", "synset", "name", "probability")}
                                                for r in range(1, k + 1)]})
    return rows


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_each_table_format_reads_back_as_the_library_predicts(images, weights, tiny_model, tmp_path, suffix, capsys):
    pytest.importorskip("pyarrow") if suffix == ".parquet" else None
    out = tmp_path / f"labels{suffix}"
    assert predict_main([str(images), "--weights", str(weights), "--out", str(out), "--batch-size", "4",
                         "--workers", "0", "--threads", "1", "--topk", "3"]) == 0
    said = capsys.readouterr().out
    assert f"{COUNT} rows, 1 unreadable" in said and "skipped" in said
    rows = read_table(out)
    assert_same_rows(rows, reference_rows(tiny_model, expected_paths(images), topk=3))
    assert [r for r in rows if "error" in r][0]["path"].endswith("broken.jpg")
    assert not parts_folder(out).exists()  # the journals go once the table is written


def test_logits_and_features_are_shards_beside_the_table(images, weights, tiny_model, tmp_path):
    paths = expected_paths(images)
    for output in ("logits", "features"):
        out = tmp_path / f"{output}.jsonl"
        assert predict_main([str(images), "--weights", str(weights), "--out", str(out), "--batch-size", "4",
                             "--workers", "0", "--threads", "1", "--output", output]) == 0
        rows = lines(out)
        good = [p for p, r in zip(paths, rows) if "top" in r]
        x = torch.stack([alphanet_zoo.transforms(tiny_model)(Image.open(p).convert("RGB")) for p in good])
        with torch.inference_mode():
            pooled = tiny_model.forward_head(tiny_model.forward_features(x), pre_logits=True)
            want = tiny_model.get_classifier()(pooled) if output == "logits" else pooled
        got = np.stack([np.load(tmp_path / r[output])[r[f"{output}_row"]] for r in rows if "top" in r])
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
        assert all(r[output] is None for r in rows if "error" in r)


def test_an_exported_file_labels_the_same_and_has_no_features(images, tiny_model, tmp_path, capsys):
    from alphanet_zoo.export import export_model

    onnx = export_model(tiny_model, tmp_path / "tiny.onnx", "onnx", precision="fp32").path
    out = tmp_path / "onnx.jsonl"
    assert predict_main([str(images), "--model", str(onnx), "--out", str(out), "--batch-size", "4",
                         "--workers", "1", "--threads", "1"]) == 0
    assert_same_rows(lines(out), reference_rows(tiny_model, expected_paths(images)))
    assert predict_main([str(images), "--model", str(onnx), "--out", str(tmp_path / "f.jsonl"),
                         "--output", "features"]) == 2
    assert "features (the pooled embedding) need PyTorch weights" in capsys.readouterr().err


def test_predict_dataset_yields_the_rows_the_command_writes(images, tiny_model):
    rows = list(alphanet_zoo.predict_dataset(tiny_model, images, batch_size=4, topk=2))
    assert_same_rows(rows, reference_rows(tiny_model, expected_paths(images), topk=2))
    skip = set(range(4))  # the first batch done already: not computed again
    assert [r["path"] for r in alphanet_zoo.predict_dataset(tiny_model, images, batch_size=4, done=skip)] == \
        expected_paths(images)[4:]


def test_console_rows_bad_images_and_the_all_bad_case(images, weights, tmp_path, capsys):
    broken = str(images / "a" / "broken.jpg")
    assert predict_main([broken, expected_paths(images)[1], "--weights", str(weights), "--json"]) == 0
    out, err = capsys.readouterr()
    first = json.loads(out.splitlines()[0])
    assert first["path"] == broken and "cannot identify image" in first["error"]
    assert "1 of 2 images could not be read" in err
    assert predict_main([broken, "--weights", str(weights)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alphanet-predict: error: cannot read image") and "\n" not in err


# ---- resume, and one run at a time -----------------------------------------------------------------------

def test_a_journal_keeps_whole_batches_and_drops_a_torn_line(tmp_path):
    out = tmp_path / "t.jsonl"
    batches = [[0, 1], [2, 3], [4]]
    journal = Journal(out, {"k": 1})
    assert journal.open(batches) == set()
    journal.append([{"i": 0, "path": "a"}, {"i": 1, "path": "b"}])
    journal.append([{"i": 2, "path": "c"}])  # half a batch, then a torn line: both redone
    journal.close()
    with open(journal.path, "a") as f:
        f.write('{"i": 3, "pa')
    again = Journal(out, {"k": 1})
    assert again.open(batches) == {0, 1} and again.resumed
    again.close()
    assert [json.loads(x)["i"] for x in journal.path.read_text().splitlines()[1:]] == [0, 1]
    with pytest.raises(alphanet_zoo.errors.InputError, match=r"other settings \(k\)"):
        Journal(out, {"k": 2}).open(batches)


def test_a_second_run_on_the_same_out_is_refused_in_one_line(images, weights, tmp_path, capsys):
    out = tmp_path / "busy.jsonl"
    parts_folder(out).mkdir()
    holder = ExclusiveLock(parts_folder(out) / "rank-00000-of-00001.lock", "held")
    holder.acquire()
    try:
        assert predict_main([str(images), "--weights", str(weights), "--out", str(out)]) == 2
    finally:
        holder.release()
    err = capsys.readouterr().err.strip()
    assert f"another alphanet-predict (pid {os.getpid()}) is writing {out}" in err and "\n" not in err


def _command(images: Path, weights: Path, out: Path) -> list[str]:
    return [str(BIN / "alphanet-predict"), str(images), "--weights", str(weights), "--out", str(out),
            "--batch-size", "2", "--workers", "0", "--threads", "1", "--output", "logits"]


def _rows_in_journal(out: Path) -> int:
    journal = parts_folder(out) / "rank-00000-of-00001.jsonl"
    return max(0, len(journal.read_bytes().splitlines()) - 1) if journal.exists() else 0


@pytest.mark.slow
def test_stopped_by_any_signal_at_any_point_the_same_command_ends_with_one_row_per_image(images, weights, tmp_path):
    reference = tmp_path / "ref.jsonl"
    assert subprocess.run(_command(images, weights, reference), capture_output=True).returncode == 0
    out = tmp_path / "labels.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for sig, after_rows in ((signal.SIGKILL, 1), (signal.SIGTERM, 4), (signal.SIGINT, 7), (signal.SIGKILL, 10)):
        run = subprocess.Popen(_command(images, weights, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 120
        while _rows_in_journal(out) < after_rows and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        run.send_signal(sig)
        code = run.wait(60)
        assert code in {signal.SIGKILL: (-9,), signal.SIGTERM: (143,), signal.SIGINT: (130,)}[sig], \
            run.stderr.read()[-2000:]
        if sig == signal.SIGKILL:  # a kill mid-write: a torn last line
            with open(parts_folder(out) / "rank-00000-of-00001.jsonl", "a") as f:
                f.write('{"i": 11, "path": "x')
    done = subprocess.run(_command(images, weights, out), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "continuing" in done.stdout
    rows, ref = lines(out), lines(reference)
    assert [r["path"] for r in rows] == [r["path"] for r in ref] == expected_paths(images)
    assert [r.get("top") for r in rows] == [r.get("top") for r in ref]  # the same batches: the same numbers
    for r, s in zip(rows, ref):
        if r["logits"]:
            np.testing.assert_array_equal(np.load(tmp_path / r["logits"])[r["logits_row"]],
                                          np.load(tmp_path / s["logits"])[s["logits_row"]])


@pytest.mark.slow
def test_two_torchrun_processes_write_the_table_one_process_writes(images, weights, tmp_path):
    tables = {}
    for n in (1, 2):
        folder = tmp_path / str(n)
        folder.mkdir()
        done = torchrun("alphanet-predict", [images, "--weights", weights, "--out", folder / "t.csv", "--batch-size",
                                             "2", "--workers", "1", "--output", "logits"], n, folder)
        assert done.returncode == 0, done.stderr[-3000:]
        tables[n] = (folder / "t.csv").read_text()
        assert f"{COUNT} rows" in done.stdout
    assert tables[1] == tables[2]  # rows and probabilities, in the input order
    assert len(tables[1].splitlines()) == COUNT + 1


def test_an_unfinished_run_of_another_command_is_refused_and_no_resume_starts_over(images, weights, tmp_path, capsys):
    out = tmp_path / "t.jsonl"
    parts_folder(out).mkdir()
    (parts_folder(out) / "rank-00000-of-00001.jsonl").write_text(
        '{"format": "alphanet_zoo.predict-journal/1", "settings": {"topk": 9}}\n')
    argv = [str(images), "--weights", str(weights), "--out", str(out), "--batch-size", "4", "--workers", "0"]
    assert predict_main(argv) == 2
    assert "holds an unfinished run with other settings" in capsys.readouterr().err
    assert predict_main(argv + ["--no-resume"]) == 0
    assert len(lines(out)) == COUNT
