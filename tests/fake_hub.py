"""A loopback stand-in for the Hugging Face Hub's file endpoint, for the real huggingface_hub client.

Serves ``/{org}/{repo}/resolve/{revision}/{filename}`` (HEAD and GET, with ``Range``) from folders
that ``save_pretrained`` wrote, with the headers the client reads: ``X-Repo-Commit``, ``ETag``,
``X-Linked-Etag`` and ``X-Linked-Size`` for LFS files (``*.safetensors``: sha256), the git blob
sha1 as ``ETag`` for small files, and ``X-Error-Code`` on 404s. Files can be served corrupted
(truncated, or the same size with flipped bytes) while advertising the true etag and size, or with
a fault: a 500, a redirect loop, a body that stalls, trickles, or drops (the connection closes
halfway through the file, after a Content-Length promising all of it).

For uploads it answers the few API calls ``HfApi.create_repo`` and ``upload_folder`` make
(repo creation, README YAML validation, preupload, commit), taking every file inline ("regular"
upload mode), and records the commit like a published folder.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".tar", ".onnx")


@dataclass
class Repo:
    revisions: dict[str, str] = field(default_factory=dict)  # branch or commit -> commit
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> filename -> bytes


class FakeHub:
    """A threaded HTTP server on 127.0.0.1 that speaks the Hub's resolve endpoint."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.corrupt: dict[tuple[str, str], str] = {}  # (repo, filename) -> "truncate" | "flip"
        self.faults: dict[tuple[str, str], str] = {}  # (repo, filename) -> "stall" | "trickle" | "drop" | ...
        self.released = threading.Event()  # ends every stall and trickle at once
        self.requests: list[tuple[str, str]] = []  # (method, path)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self):  # noqa: N802
                hub._serve(self, body=False)

            def do_GET(self):  # noqa: N802
                hub._serve(self, body=True)

            def do_POST(self):  # noqa: N802
                hub._api(self)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    def add_folder(self, repo_id: str, folder: Path, branch: str = "main") -> str:
        """Publish a folder as a new commit of ``repo_id`` on ``branch``; returns the commit id."""
        return self.add_files(repo_id, {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()},
                              branch)

    def add_files(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        digest = hashlib.sha1(repo_id.encode())
        for name, data in files.items():
            digest.update(name.encode() + hashlib.sha256(data).digest())
        repo = self.repos.setdefault(repo_id, Repo())
        commit = digest.hexdigest()
        repo.files[commit] = files
        repo.revisions[branch] = commit
        repo.revisions[commit] = commit
        return commit

    @staticmethod
    def etag(filename: str, data: bytes) -> str:
        if filename.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def _serve(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", handler.path.split("?")[0])
        if not match:
            return self._error(handler, 404, "EntryNotFound")
        repo_id, revision, filename = match.group(1), unquote(match.group(2)), unquote(match.group(3))
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound")
        commit = repo.revisions.get(revision)
        if commit is None:
            return self._error(handler, 404, "RevisionNotFound")
        data = repo.files[commit].get(filename)
        if data is None:
            return self._error(handler, 404, "EntryNotFound", commit)
        fault = self.faults.get((repo_id, filename))
        if fault == "error500":
            return self._error(handler, 500, "InternalError")
        if fault == "redirect-loop":
            handler.send_response(302)
            handler.send_header("Location", handler.path)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        etag = self.etag(filename, data)
        size = len(data)
        mode = self.corrupt.get((repo_id, filename))
        if mode == "truncate":
            data = data[: size // 2]
        elif mode == "flip":
            data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        ranged = handler.headers.get("Range")
        if ranged and body:
            start = int(re.match(r"bytes=(\d+)-", ranged).group(1))
        payload = data[start:]
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{etag}"')
        if filename.endswith(LFS_SUFFIXES):
            handler.send_header("X-Linked-Etag", f'"{etag}"')
            handler.send_header("X-Linked-Size", str(size))
        handler.send_header("Content-Length", str(len(payload)))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        if not body:
            return None
        try:
            if fault == "drop":  # the connection closes halfway through the file, on every request
                handler.wfile.write(payload[:max(size // 2 - start, 0)])
                handler.wfile.flush()
                handler.close_connection = True
            elif fault == "stall":
                handler.wfile.write(payload[:1024])
                handler.wfile.flush()
                self.released.wait(120)
            elif fault == "trickle":
                for i in range(len(payload)):
                    if self.released.wait(1.0):
                        break
                    handler.wfile.write(payload[i:i + 1])
                    handler.wfile.flush()
            else:
                handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up
        return None

    def _api(self, handler: BaseHTTPRequestHandler) -> None:
        self.requests.append((handler.command, handler.path))
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        path = handler.path.split("?")[0]
        if path == "/api/repos/create":
            spec = json.loads(body)
            repo_id = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
            self.repos.setdefault(repo_id, Repo())
            return self._json(handler, {"url": f"{self.url}/{repo_id}"})
        if path == "/api/validate-yaml":
            return self._json(handler, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if not match or match.group(1) not in self.repos:
            return self._error(handler, 404, "RepoNotFound")
        repo_id, action, revision = match.group(1), match.group(2), unquote(match.group(3))
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json(handler, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
        repo = self.repos[repo_id]
        files = dict(repo.files.get(repo.revisions.get(revision, ""), {}))
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        commit = self.add_files(repo_id, files, branch=revision)
        return self._json(handler, {"commitUrl": f"{self.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                                    "pullRequestUrl": None})

    @staticmethod
    def _json(handler: BaseHTTPRequestHandler, payload: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str, commit: str | None = None) -> None:
        message = f"{code}: {handler.path}".encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", code)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Length", str(len(message)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(message)


@contextlib.contextmanager
def serving(monkeypatch, hf_home: Path) -> Iterator[FakeHub]:
    """A started `FakeHub` with the Hub client pointed at it (``HF_ENDPOINT``), online, and a fresh
    cache under ``hf_home``; a test adds its repos to the server it gets."""
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server
