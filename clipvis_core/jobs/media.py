"""Media a job reads: a local video / frame directory, or an http(s) URL fetched with an auth header.

Identity (for the job key) is the content hash of local media, and URL + ETag / size of remote
media (one HEAD request, no download). Hashes are cached per (path, size, mtime) in the process.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
import urllib.parse
from pathlib import Path

from ..errors import InputError

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
_CHUNK = 1 << 20
_hash_cache: dict[tuple, str] = {}


def is_url(media: str) -> bool:
    return urllib.parse.urlsplit(str(media)).scheme in ("http", "https")


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, cached while its size and mtime stay the same."""
    st = path.stat()
    ck = (str(path), st.st_size, st.st_mtime_ns)
    if ck not in _hash_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _hash_cache[ck] = h.hexdigest()
    return _hash_cache[ck]


def local_identity(media: str) -> str:
    path = Path(media).expanduser()
    if path.is_file():
        return "sha256:" + file_digest(path)
    if path.is_dir():
        # A frame directory: names and bytes of every file, in name order.
        h = hashlib.sha256()
        files = sorted(p for p in path.iterdir() if p.is_file())
        if not files:
            raise InputError(f"frame directory {path} is empty: point media at a video file or a folder of frames")
        for p in files:
            h.update(p.name.encode() + b"\0" + file_digest(p).encode())
        return "dir-sha256:" + h.hexdigest()
    raise InputError(f"media not found: {media} (give an existing video file, frame directory or http(s) URL)")


def _http_error(url: str, status: int) -> Exception:
    # 4xx: the request is wrong (URL, token) -> InputError, never retried; 5xx: transient.
    if 400 <= status < 500:
        hint = "check the auth header / token" if status in (401, 403) else "check the URL"
        return InputError(f"media URL {url} answered HTTP {status}: {hint}")
    return ConnectionError(f"media URL {url} answered HTTP {status} (server error, will retry)")


def url_identity(url: str, headers: dict | None) -> str:
    """URL + ETag (or Content-Length + Last-Modified) from a HEAD request; falls back to the body hash."""
    import requests

    resp = requests.head(url, headers=headers or {}, allow_redirects=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
    if resp.status_code not in (405, 501):  # servers without HEAD: fall through to a download
        if resp.status_code >= 400:
            raise _http_error(url, resp.status_code)
        etag = resp.headers.get("ETag")
        size = resp.headers.get("Content-Length")
        if etag or size:
            return f"url:{url}|etag={etag or ''}|size={size or ''}|mtime={resp.headers.get('Last-Modified', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        path = download(url, headers, Path(tmp), max_bytes=None)
        return "sha256:" + file_digest(path)


def _suffix_for(url: str, content_type: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    candidates = [parts.path] + [v for vs in urllib.parse.parse_qs(parts.query).values() for v in vs]
    for c in candidates:  # Label Studio serves local files as /data/local-files/?d=dir/clip.mp4
        suffix = Path(urllib.parse.unquote(c)).suffix.lower()
        if 1 < len(suffix) <= 6:
            return suffix
    guessed = mimetypes.guess_extension((content_type or "").split(";")[0].strip()) if content_type else None
    return guessed or ".mp4"


def download(url: str, headers: dict | None, dest_dir: Path, max_bytes: int | None) -> Path:
    """Stream ``url`` into a file under ``dest_dir`` (size-limited, with timeouts); returns its path."""
    import requests

    dest_dir.mkdir(parents=True, exist_ok=True)
    with requests.get(url, headers=headers or {}, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)) as resp:
        if resp.status_code >= 400:
            raise _http_error(url, resp.status_code)
        declared = resp.headers.get("Content-Length")
        if max_bytes is not None and declared and declared.isdigit() and int(declared) > max_bytes:
            raise InputError(f"media URL {url} is {int(declared) >> 20} MiB, over the limit of {max_bytes >> 20} MiB "
                             "(raise CLIPVIS_MAX_DOWNLOAD_MB)")
        fd, tmp = tempfile.mkstemp(prefix="media-", suffix=_suffix_for(url, resp.headers.get("Content-Type")), dir=dest_dir)
        total = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in resp.iter_content(_CHUNK):
                    total += len(chunk)
                    if max_bytes is not None and total > max_bytes:
                        raise InputError(f"media URL {url} exceeds the download limit of {max_bytes >> 20} MiB "
                                         "(raise CLIPVIS_MAX_DOWNLOAD_MB)")
                    f.write(chunk)
        except BaseException:
            os.unlink(tmp)
            raise
    return Path(tmp)
