"""Shared helpers for the Label Studio backend tests: a real HTTP media server on 127.0.0.1 that
checks auth headers like Label Studio does, and a reference decoder of LS brush RLE."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import requests

LEGACY_TOKEN = "legacy-token-123456"
# A syntactically JWT-shaped refresh token, as Label Studio's personal access tokens are.
PAT = "eyJhbGciOiJIUzI1NiJ9.eyJ0b2tlbl90eXBlIjoicmVmcmVzaCJ9.c2lnbmF0dXJl"
ACCESS = "access-abc"


class MediaServer:
    """Serves files under ``root`` at /data/upload/<name>, /data/local-files/?d=<rel> and /open/<name>
    (no auth); /redirect?to=URL answers 302; /drip sends a few bytes per second, /short closes the
    stream early. Records every request (GET or POST) with its Authorization header."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def _send(self, code, body=b"", headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                outer.requests.append((self.path, self.headers.get("Authorization")))
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/api/token/refresh" and body.get("refresh") == PAT:
                    return self._send(200, json.dumps({"access": ACCESS}).encode(), {"Content-Type": "application/json"})
                self._send(401)

            def do_GET(self):
                auth = self.headers.get("Authorization")
                outer.requests.append((self.path, auth))
                url = urlsplit(self.path)
                if url.path == "/redirect":
                    return self._send(302, headers={"Location": parse_qs(url.query)["to"][0]})
                if url.path.startswith("/open/"):
                    return self._file(url.path[len("/open/"):])
                if url.path in ("/drip", "/short"):
                    return self._partial(drip=url.path == "/drip")
                if auth not in (f"Token {LEGACY_TOKEN}", f"Bearer {ACCESS}"):
                    return self._send(401, b"auth required")
                if url.path.startswith("/data/upload/"):
                    return self._file(url.path.split("/", 4)[-1])
                if url.path.rstrip("/") == "/data/local-files":
                    return self._file(parse_qs(url.query)["d"][0])
                self._send(404)

            def _partial(self, drip):
                self.send_response(200)
                self.send_header("Content-Length", str(1 << 20))
                self.end_headers()
                try:
                    for _ in range(100 if drip else 1):
                        self.wfile.write(b"x" * 100)
                        self.wfile.flush()
                        if drip:
                            time.sleep(0.3)
                except OSError:
                    pass  # the client gave up: what a drip is for
                self.close_connection = True

            def _file(self, rel):
                p = outer.root / rel
                if not p.is_file():
                    return self._send(404)
                self._send(200, p.read_bytes(), {"Content-Type": "application/octet-stream"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def media_root(tmp_path) -> Path:
    d = tmp_path / "media"
    d.mkdir()
    return d


@pytest.fixture
def media_server(media_root):
    s = MediaServer(media_root)
    yield s
    s.close()


@pytest.fixture
def other_server(tmp_path):
    """A second origin (another port): media there must be refused unless allow-listed."""
    root = tmp_path / "other"
    root.mkdir()
    s = MediaServer(root)
    yield s
    s.close()


def decode_ls_rle(data: list[int]) -> np.ndarray:
    """Reference decoder of Label Studio's brush RLE (thi.ng rle-pack): the flat RGBA byte array."""
    bits = "".join(format(b, "08b") for b in data)
    pos = 0

    def read(n):
        nonlocal pos
        v = int(bits[pos:pos + n], 2)
        pos += n
        return v

    num = read(32)
    word = read(5) + 1
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(num, np.uint8)
    i = 0
    while i < num:
        repeat = read(1)
        n = read(sizes[read(2)]) + 1
        if repeat:
            out[i:i + n] = read(word)
        else:
            for k in range(n):
                out[i + k] = read(word)
        i += n
    return out


# -- the backend as in production: `clipvis labelstudio serve` (gunicorn) on loopback ----------------
ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "clipvis-ls", "s3cret-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout:.0f}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group we started (start_new_session)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def served_backend(env: dict, log: Path, *args: str):
    """``clipvis labelstudio serve`` on a free loopback port; yields its base URL."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "clipvis_core", "labelstudio", "serve", "--port", str(port),
                                 *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, log, timeout=90)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
