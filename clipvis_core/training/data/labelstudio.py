"""Label Studio brush annotations -> ``SampleRecord``s, from an export JSON or a live project.

An export is a list of tasks ``{id, data: {<image key>: url}, annotations: [{result: [...],
was_cancelled, created_at, ...}]}``. Per task only the latest annotation that was not cancelled
counts; its ``brushlabels`` results (``value.rle``, ``original_width``/``original_height``) become
instances. Other result types (rectangles, polygons, choices) are not masks: they are counted and
reported, not trained on. Brush RLE is decoded lazily (``decode_brush_rle``) in loader workers.

A live project (``labelstudio:ID``) is read through the API with the same URL and token variables
as the Label Studio backend (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``); task images are
downloaded with the token into a cache folder, once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from ...errors import InputError
from .sample import InstanceRecord, SampleRecord

log = logging.getLogger(__name__)
BRUSH = "brushlabels"


def is_export(data) -> bool:
    return isinstance(data, list) and bool(data) and all(isinstance(t, dict) and "data" in t for t in data)


def _latest(task: dict) -> dict | None:
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled") and a.get("result") is not None]
    # created_at is ISO 8601 (sortable as text); ids grow too, so they break ties.
    return max(done, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0), default=None)


def _image_url(task: dict, where: str) -> str:
    data = task.get("data") or {}
    if isinstance(data.get("image"), str):
        return data["image"]
    urls = [v for v in data.values() if isinstance(v, str) and ("/" in v or "." in v)]
    if len(urls) != 1:
        raise InputError(f"{where}: cannot tell which task field is the image ({sorted(data)}): name it 'image'")
    return urls[0]


def parse_export(tasks: list, name: str, resolve) -> list[SampleRecord]:
    """``resolve(url, where) -> local path`` finds each task's image."""
    records, skipped = [], {}
    for task in tasks:
        ann = _latest(task)
        if ann is None:
            continue
        where = f"{name}: task {task.get('id')}"
        insts, size = [], None
        for r in ann["result"]:
            if r.get("type") != BRUSH:
                skipped[r.get("type")] = skipped.get(r.get("type"), 0) + 1
                continue
            value = r.get("value") or {}
            if value.get("format", "rle") != "rle" or not isinstance(value.get("rle"), list):
                raise InputError(f"{where}: brush result {r.get('id')} has no 'rle' list: re-export in Label Studio's JSON format")
            try:
                hw = int(r["original_height"]), int(r["original_width"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"{where}: brush result {r.get('id')} lacks original_width/original_height") from None
            if size is not None and hw != size:
                raise InputError(f"{where}: brush results disagree on the image size ({size} vs {hw})")
            size = hw
            labels = value.get(BRUSH) or []
            insts.append(InstanceRecord(segmentations=[{"brush_rle": value["rle"]}],
                                        category=labels[0] if labels else None, track_id=r.get("id")))
        if insts:
            path = resolve(_image_url(task, where), where)
            records.append(SampleRecord(source=f"{where} ({Path(path).name})", frames=[str(path)],
                                        height=size[0], width=size[1], instances=insts))
    if skipped:
        log.warning("%s: ignored %s (not masks; only brush annotations train the mask generator)",
                    name, ", ".join(f"{n} {t} results" for t, n in sorted(skipped.items(), key=str)))
    return records


def export_resolver(json_path: Path, images_dir: str | Path | None, client: "LabelStudioClient | None"):
    """Task URLs of an export -> files: under ``images_dir`` (by file name), next to the JSON, else
    downloaded through the API when ``LABEL_STUDIO_URL`` is set."""
    roots = [Path(images_dir)] if images_dir else [json_path.parent]

    def resolve(url: str, where: str) -> Path:
        p = urlsplit(url)
        rel = unquote((parse_qs(p.query).get("d") or [p.path])[0])
        if not p.scheme and Path(rel).is_file():
            return Path(rel)
        for root in roots:
            for cand in (root / rel.lstrip("/"), root / Path(rel).name):
                if cand.is_file():
                    return cand
        if client is not None:
            return client.download(url, where)
        raise InputError(f"{where}: image {url} not found under {roots[0]}: pass --images DIR holding the task images, "
                         "or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY to download them")
    return resolve


class LabelStudioClient:
    """The little of the Label Studio API training needs: export a project, download task media."""

    def __init__(self, url: str, token: str, cache_dir: str | Path):
        self.url = url.rstrip("/")
        self.token = token
        self.cache_dir = Path(cache_dir)
        self._bearer: str | None = None

    @classmethod
    def from_env(cls, cache_dir: str | Path | None = None) -> "LabelStudioClient | None":
        url, token = os.environ.get("LABEL_STUDIO_URL"), os.environ.get("LABEL_STUDIO_API_KEY")
        if not url:
            return None
        if not token:
            raise InputError("LABEL_STUDIO_URL is set but LABEL_STUDIO_API_KEY is not: set it to your Label Studio "
                             "access token (Account & Settings)")
        if cache_dir is None:
            base = os.environ.get("CLIPVIS_CACHE_DIR")
            cache_dir = Path(base) / "labelstudio" if base else Path.home() / ".cache" / "clipvis" / "labelstudio"
        return cls(url, token, Path(cache_dir) / "training-media")

    def _headers(self, refresh: bool = False) -> dict:
        import requests

        # A personal access token (JWT) is exchanged for a short-lived bearer; a legacy token is sent as is.
        if not (self.token.startswith("eyJ") and self.token.count(".") == 2):
            return {"Authorization": f"Token {self.token}"}
        if refresh or self._bearer is None:
            r = requests.post(f"{self.url}/api/token/refresh", json={"refresh": self.token}, timeout=30)
            if r.status_code != 200:
                raise InputError(f"Label Studio rejected LABEL_STUDIO_API_KEY (HTTP {r.status_code}): create a new token")
            self._bearer = r.json()["access"]
        return {"Authorization": f"Bearer {self._bearer}"}

    def _get(self, url: str, **kw):
        import requests

        try:
            r = requests.get(url, headers=self._headers(), timeout=(10, 300), **kw)
            if r.status_code == 401 and self._bearer is not None:
                r = requests.get(url, headers=self._headers(refresh=True), timeout=(10, 300), **kw)
        except requests.RequestException as e:
            raise InputError(f"cannot reach Label Studio at {self.url} ({e.__class__.__name__}): check LABEL_STUDIO_URL") from None
        if r.status_code in (401, 403):
            raise InputError(f"Label Studio refused the request (HTTP {r.status_code}): check LABEL_STUDIO_API_KEY")
        return r

    def export(self, project: int) -> list:
        r = self._get(f"{self.url}/api/projects/{project}/export", params={"exportType": "JSON", "download_all_tasks": "true"})
        if r.status_code == 404:
            raise InputError(f"Label Studio project {project} not found at {self.url}: check the id in the project's URL")
        if r.status_code != 200:
            raise InputError(f"Label Studio export of project {project} failed (HTTP {r.status_code})")
        return r.json()

    def download(self, url: str, where: str) -> Path:
        p = urlsplit(url)
        full = url if p.scheme in ("http", "https") else self.url + "/" + url.lstrip("/")
        name = unquote((parse_qs(p.query).get("d") or [p.path])[0])
        dest = self.cache_dir / (hashlib.sha256(full.encode()).hexdigest()[:24] + (Path(name).suffix.lower() or ".jpg"))
        if dest.is_file():
            return dest
        # The token goes only to the Label Studio host, never to third-party media hosts.
        same_host = urlsplit(full).netloc == urlsplit(self.url).netloc
        if same_host:
            r = self._get(full)
        else:
            import requests

            try:
                r = requests.get(full, timeout=(10, 300))
            except requests.RequestException as e:
                raise InputError(f"{where}: cannot download {full} ({e.__class__.__name__})") from None
        if r.status_code != 200:
            raise InputError(f"{where}: downloading {full} failed (HTTP {r.status_code}): check the task's image URL")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".part-")
        with os.fdopen(fd, "wb") as f:
            f.write(r.content)
        os.replace(tmp, dest)  # atomic: a crashed download never leaves a half file in the cache
        return dest


def load_project(project: str, cache_dir: str | Path | None = None) -> list[SampleRecord]:
    if not project.isdigit():
        raise InputError(f"labelstudio:{project}: use the numeric project id, e.g. labelstudio:3")
    client = LabelStudioClient.from_env(cache_dir)
    if client is None:
        raise InputError("labelstudio:PROJECT needs LABEL_STUDIO_URL (e.g. http://localhost:8080) and LABEL_STUDIO_API_KEY")
    tasks = client.export(int(project))
    return parse_export(tasks, f"labelstudio:{project}", lambda url, where: client.download(url, where))
