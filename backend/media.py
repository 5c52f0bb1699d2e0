"""Task media -> a local file, fetched only from places the backend trusts.

Allowed: the Label Studio host (with the project token), origins listed in
``CLIPVIS_ALLOWED_MEDIA_HOSTS`` (no token), and local files under ``LOCAL_FILES_DOCUMENT_ROOT``.
Everything else (other hosts, ``..``, ``file://``, redirects elsewhere, oversized files) is
refused with a one-line message, because task data is user-controlled input.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import requests
import urllib3

from clipvis_core.errors import ClipvisError, InputError

from .urls import UrlRefused, canonical, origin_of

REDIRECT_CODES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 3
CHUNK = 1 << 20


class MediaRefused(InputError):
    """A media URL the backend will not fetch."""


class MediaError(ClipvisError):
    """A permitted fetch that failed (HTTP error, auth, network, time limit, a cut-short stream)."""


def origin(url: str) -> str:
    """``scheme://host:port`` of a URL read the way the request is made (see ``backend.urls``)."""
    try:
        return origin_of(url)
    except UrlRefused as e:
        raise MediaRefused(str(e)) from None


class LabelStudioAuth:
    """``Authorization`` header for Label Studio: a legacy token (``Token``) or a personal access
    token, a JWT refresh token exchanged at ``/api/token/refresh`` for a short-lived ``Bearer``.

    ``url`` is the pinned Label Studio origin: the refresh token is only ever posted there."""

    ACCESS_TTL_S = 240.0  # LS access tokens live ~5 min

    def __init__(self, url: str | None, token: str | None):
        self.url = canonical(url).text.rstrip("/") if url else None
        self.token = token or ""
        self._lock = threading.Lock()
        self._access: tuple[str, float] | None = None

    @property
    def is_personal_access_token(self) -> bool:
        return self.token.count(".") == 2 and self.token.startswith("eyJ")

    def header(self, refresh: bool = False) -> dict[str, str]:
        if not self.token:
            return {}
        if not self.is_personal_access_token:
            return {"Authorization": f"Token {self.token}"}
        with self._lock:
            if refresh or not self._access or self._access[1] < time.monotonic():
                if not self.url:
                    raise MediaError("personal access token given but no Label Studio URL: set LABEL_STUDIO_URL")
                try:  # no redirects: a 307 would re-post the refresh token to wherever it points
                    r = requests.post(f"{self.url}/api/token/refresh", json={"refresh": self.token}, timeout=10,
                                      allow_redirects=False)
                except requests.RequestException as e:
                    raise MediaError(f"cannot reach Label Studio at {self.url}: {e.__class__.__name__}") from None
                if r.status_code != 200:
                    raise MediaError(
                        f"Label Studio rejected the personal access token (HTTP {r.status_code}): "
                        "create a new one under Account & Settings"
                    )
                self._access = (r.json()["access"], time.monotonic() + self.ACCESS_TTL_S)
            return {"Authorization": f"Bearer {self._access[0]}"}


class MediaFetcher:
    def __init__(self, ls_url: str | None, auth: LabelStudioAuth, *, allowed_hosts=(), document_root=None,
                 max_bytes: int = 2 << 30, max_seconds: float = 600.0, cache_dir: Path):
        self.ls_url = canonical(ls_url).text.rstrip("/") if ls_url else None
        self.auth = auth
        self.allowed = {origin(h) for h in allowed_hosts}
        self.ls_origin = origin(self.ls_url) if self.ls_url else None
        if self.ls_origin:
            self.allowed.add(self.ls_origin)
        self.document_root = Path(document_root).resolve() if document_root else None
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.cache_dir = Path(cache_dir) / "media"
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or .netrc from the environment: exactly the checked URL

    # -- classification -------------------------------------------------------------------------
    def fetch(self, url: str, default_suffix: str = ".mp4", download: bool = True) -> Path | None:
        """Local path of the task media ``url`` (downloaded into the cache when remote).

        ``default_suffix`` names a download whose URL and Content-Type say nothing of its format.
        ``download=False``: None instead of downloading (policy checks still apply)."""
        if not isinstance(url, str) or not url.strip():
            raise MediaRefused("task has no media URL in the field the labeling config names")
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url) or "\\" in url:
            raise MediaRefused(f"media URL with whitespace, control characters or a backslash refused: {url!r}")
        p = urlsplit(url)
        scheme = p.scheme.lower()
        if scheme == "file":
            raise MediaRefused(f"file:// URLs are refused ({url}): serve media through Label Studio or "
                               "put it under LOCAL_FILES_DOCUMENT_ROOT")
        if ".." in unquote(p.path).split("/"):
            raise MediaRefused(f"media path with '..' refused: {url}")
        if scheme in ("http", "https"):
            url = self._canonical(url)
            local = self._local_files_path(url) if origin(url) == self.ls_origin else None
            return local or self._download(url, default_suffix, download)
        if scheme or url.startswith("//"):
            raise MediaRefused(f"media URL scheme {p.scheme or '(none)'}:// is not supported ({url}): let Label "
                               "Studio serve it (http) or put it under LOCAL_FILES_DOCUMENT_ROOT")
        if url.startswith("/data/"):
            if not self.ls_url:
                raise MediaRefused(f"relative media URL {url} but the Label Studio host is unknown: "
                                   "connect the backend from Label Studio or set LABEL_STUDIO_URL")
            full = self._canonical(self.ls_url + url)
            return self._local_files_path(full) or self._download(full, default_suffix, download)
        return self._local_path(unquote(p.path))

    @staticmethod
    def _canonical(url: str) -> str:
        try:
            return canonical(url).text
        except UrlRefused as e:
            raise MediaRefused(str(e)) from None

    def _local_files_path(self, url: str) -> Path | None:
        """``/data/local-files/?d=rel`` read straight from disk when it lies under our document root."""
        p = urlsplit(url)
        if not p.path.rstrip("/").endswith("/data/local-files"):
            return None
        rel = (parse_qs(p.query).get("d") or [""])[0]
        if not rel or ".." in rel.replace("\\", "/").split("/"):
            raise MediaRefused(f"local-files path refused: {url}")
        if self.document_root is None:
            return None  # not on this host's disk: download it through Label Studio
        path = (self.document_root / rel).resolve()
        if not path.is_relative_to(self.document_root):
            raise MediaRefused(f"local-files path escapes LOCAL_FILES_DOCUMENT_ROOT: {rel}")
        return path if path.is_file() else None

    def _local_path(self, raw: str) -> Path:
        if self.document_root is None:
            raise MediaRefused(f"local media path {raw} refused: set LOCAL_FILES_DOCUMENT_ROOT to allow a folder")
        path = (self.document_root / raw.lstrip("/")).resolve() if not Path(raw).is_absolute() else Path(raw).resolve()
        if not path.is_relative_to(self.document_root):
            raise MediaRefused(f"local media path {raw} is outside LOCAL_FILES_DOCUMENT_ROOT ({self.document_root})")
        if not path.is_file():
            raise MediaRefused(f"local media file not found: {path}")
        return path

    def _check_origin(self, url: str, via: str = "") -> None:
        if origin(url) not in self.allowed:
            allowed = ", ".join(sorted(self.allowed)) or "none (Label Studio host unknown)"
            raise MediaRefused(f"media {via}host {origin(url)} is not allowed ({url}); allowed: {allowed} "
                               "(add origins with CLIPVIS_ALLOWED_MEDIA_HOSTS)")

    # -- download -------------------------------------------------------------------------------
    def _cached(self, key: str) -> Path | None:
        return next(self.cache_dir.glob(f"{key}.*"), None) if self.cache_dir.exists() else None

    def _download(self, url: str, default_suffix: str, download: bool = True) -> Path | None:
        self._check_origin(url)
        key = hashlib.sha256(url.encode()).hexdigest()[:24]
        if not download:
            return self._cached(key)
        with self._locks_guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one download per URL; concurrent requests wait and reuse it
            done = self._cached(key)
            if done is not None:
                return done
            return self._get(url, key, default_suffix)

    def _get(self, url: str, key: str, default_suffix: str) -> Path:
        retried_auth = False
        deadline = time.monotonic() + self.max_seconds
        for _ in range(MAX_REDIRECTS + 1):
            is_ls = origin(url) == self.ls_origin
            headers = self.auth.header() if is_ls else {}  # the token never leaves the LS host
            prepared = self.session.prepare_request(requests.Request("GET", url, headers=headers))
            if origin(prepared.url) != origin(url):  # what goes on the wire, checked once more
                raise MediaRefused(f"media URL changed origin when prepared: {url}")
            try:
                r = self.session.send(prepared, stream=True, allow_redirects=False,
                                      timeout=(5, min(60.0, max(1.0, deadline - time.monotonic()))))
            except requests.RequestException as e:
                raise MediaError(f"cannot download {url}: {e.__class__.__name__}") from None
            with r:
                if r.status_code in REDIRECT_CODES:
                    url = self._canonical(urljoin(url, r.headers.get("Location", "")))
                    self._check_origin(url, via="redirect to ")
                    continue
                if r.status_code == 401 and is_ls and self.auth.is_personal_access_token and not retried_auth:
                    self.auth.header(refresh=True)
                    retried_auth = True
                    continue
                if r.status_code in (401, 403):
                    raise MediaError(f"Label Studio refused the media download (HTTP {r.status_code}) for {url}: "
                                     "check the backend's token (LABEL_STUDIO_API_KEY or the project owner's)")
                if r.status_code != 200:
                    raise MediaError(f"media download failed with HTTP {r.status_code}: {url}")
                return self._store(r, url, key, default_suffix, deadline)
        raise MediaRefused(f"too many redirects (> {MAX_REDIRECTS}) for {url}")

    def _store(self, r: requests.Response, url: str, key: str, default_suffix: str, deadline: float) -> Path:
        size = int(r.headers.get("Content-Length") or 0)
        limit_mb = self.max_bytes / (1 << 20)
        if size > self.max_bytes:
            raise MediaRefused(f"media is {size / (1 << 20):.0f} MB, over the {limit_mb:.0f} MB limit: "
                               "raise CLIPVIS_MAX_MEDIA_MB")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        dest = self.cache_dir / f"{key}{_suffix(url, r.headers.get('Content-Type'), default_suffix)}"
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=self.cache_dir)
        # A slow sender can keep every read under the socket timeout: a timer cuts the stream
        # at the overall limit, from outside the blocked read.
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, (r,))
        timer.daemon = True
        timer.start()
        written = 0
        try:
            with os.fdopen(fd, "wb") as f:
                for chunk in r.iter_content(CHUNK):
                    written += len(chunk)
                    if written > self.max_bytes:
                        raise MediaRefused(f"media exceeds the {limit_mb:.0f} MB limit: raise CLIPVIS_MAX_MEDIA_MB")
                    f.write(chunk)
            if time.monotonic() >= deadline or (size and written < size):
                raise requests.exceptions.ChunkedEncodingError()
            os.replace(tmp, dest)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as e:
            if time.monotonic() >= deadline:
                raise MediaError(f"media download took longer than {self.max_seconds:.0f} s ({url}): raise "
                                 "CLIPVIS_MEDIA_TIMEOUT or serve the file faster") from None
            network = (requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
            if not isinstance(e, network):  # requests' errors are OSErrors too: the disk is what is left
                raise MediaError(f"cannot save media under {self.cache_dir}: {e.strerror or e} "
                                 "(free disk space or set CLIPVIS_CACHE_DIR)") from None
            got = max(written, getattr(r.raw, "tell", lambda: 0)())  # counts a partial chunk too
            raise MediaError(f"media download of {url} was cut short after {got} bytes"
                             f"{f' of {size}' if size else ''}: the server closed the connection") from None
        finally:
            timer.cancel()
            if os.path.exists(tmp):
                os.unlink(tmp)
        return dest


def _cut(r: requests.Response) -> None:
    try:
        r.raw.shutdown()
    except (RuntimeError, ValueError, OSError):
        pass  # already finished or released


def _suffix(url: str, content_type: str | None, default: str) -> str:
    p = urlsplit(url)
    name = (parse_qs(p.query).get("d") or [p.path])[0]
    suffix = Path(unquote(name)).suffix.lower()
    if suffix and len(suffix) <= 6:
        return suffix
    guessed = mimetypes.guess_extension((content_type or "").split(";")[0].strip()) if content_type else None
    return guessed or default
