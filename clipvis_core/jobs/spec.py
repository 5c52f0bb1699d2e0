"""What a job is (``JobSpec``) and its content-addressed key.

The key hashes the media identity (content hash, or URL + ETag/size), the vocabulary, the
inference options and the model identity (checkpoint name or the hash of its card / weights), so
the same request always maps to the same stored result, whoever submits it and wherever it runs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError
from ..tracks import FORMAT_VERSION
from ..vocabulary import Vocabulary
from . import media as media_mod

KEY_LENGTH = 32  # hex chars (128 bits)


def checkpoint_identity(checkpoint: str) -> str:
    """A registered name stands for itself; a card / .pth file for the hash of its bytes; a model line
    for its promoted version (so a promotion changes every job key)."""
    if checkpoint.startswith("line:"):
        from ..versions import resolve_line

        version, inner = resolve_line(checkpoint[5:])
        return f"line:{version}:{checkpoint_identity(inner)}"
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        return f"name:{checkpoint}"
    ident = f"file:{path.name}:{media_mod.file_digest(path)}"
    if path.suffix == ".json":
        try:
            weights = json.loads(path.read_text()).get("checkpoint")
        except (ValueError, AttributeError):
            raise InputError(f"checkpoint card {path} is not a JSON object: fix the file or pass a .pth") from None
        if weights and Path(weights).expanduser().is_file():
            ident += f"+{media_mod.file_digest(Path(weights).expanduser())}"
    return ident


def adapter_identity(adapter: str | None) -> str | None:
    """None, or the hash of the adapter file's bytes (a rebuilt adapter is a new result)."""
    if adapter is None:
        return None
    path = Path(adapter).expanduser()
    if not path.is_file():
        raise InputError(f"adapter file {path} not found: create one with `clipvis adapt` or fix the path")
    return f"adapter:{media_mod.file_digest(path)}"


def option_defaults() -> dict[str, Any] | None:
    """SegmentOptions field -> default (None while the core segmenter is not importable)."""
    try:
        from ..segmenter import SegmentOptions
    except ModuleNotFoundError as e:
        if e.name and e.name.endswith("segmenter"):
            return None
        raise
    return {f.name: f.default for f in fields(SegmentOptions)}


@dataclass
class JobSpec:
    """One segmentation request. ``headers`` (e.g. an auth token) are used to fetch URL media only;
    they are not part of the key."""

    media: str
    vocabulary: list[str]
    checkpoint: str
    options: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] | None = None
    adapter: str | None = None  # classifier adapter file (`clipvis adapt`); its bytes are part of the key
    _key: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.media, str) or not self.media.strip():
            raise InputError("job media is empty: give a video path, frame directory or http(s) URL")
        self.media = str(self.media)
        if isinstance(self.vocabulary, Vocabulary):
            self.vocabulary = list(self.vocabulary.entries)
        elif isinstance(self.vocabulary, str):
            self.vocabulary = [self.vocabulary]
        self.vocabulary = list(self.vocabulary)
        if self.adapter is not None:
            from ..adaptation import load_adapter

            self.adapter = str(self.adapter)
            if not self.vocabulary:  # the adapter's classes (read now: a bad file fails at submit)
                self.vocabulary = list(load_adapter(self.adapter).vocabulary)
        Vocabulary.from_names(self.vocabulary)  # raises a one-line InputError on bad entries
        if not self.checkpoint:
            raise InputError("job checkpoint is empty: give a registered name, a model card .json or a .pth")
        self.checkpoint = str(self.checkpoint)
        if not isinstance(self.options or {}, dict):
            raise InputError(f"job options must be a mapping of SegmentOptions fields, got {type(self.options).__name__}")
        defaults = option_defaults()
        if defaults is not None:
            unknown = sorted(set(self.options or {}) - set(defaults))
            if unknown:
                raise InputError(f"unknown inference option(s) {unknown}; valid: {sorted(defaults)}")
        if (self.options or {}).get("precision") is not None:  # a bad name fails at submit, not in the worker
            from ..precision import check_precision

            check_precision(self.options["precision"])
        # Options left at their default are dropped so {} and {"frame_stride": 1} share one result
        # (and {"precision": "fp32"} keeps the key jobs had before precision modes existed).
        defaults = defaults or {}
        self.options = {k: v for k, v in dict(self.options or {}).items()
                        if v is not None and not (k in defaults and defaults[k] == v)}

    @property
    def is_url(self) -> bool:
        return media_mod.is_url(self.media)

    def media_identity(self) -> str:
        if self.is_url:
            return media_mod.url_identity(self.media, self.headers)
        return media_mod.local_identity(self.media)

    def key(self) -> str:
        """Content hash addressing this job's result (computed once per spec object)."""
        if self._key is None:
            payload = {
                "media": self.media_identity(),
                "vocabulary": self.vocabulary,
                "options": self.options,
                "model": checkpoint_identity(self.checkpoint),
                "format": FORMAT_VERSION,
                "clipvis": __version__,
            }
            if self.adapter is not None:  # absent otherwise: keys of plain jobs stay as they were
                payload["adapter"] = adapter_identity(self.adapter)
            blob = json.dumps(payload, sort_keys=True, default=str).encode()
            self._key = hashlib.sha256(blob).hexdigest()[:KEY_LENGTH]
        return self._key

    def to_dict(self) -> dict:
        """JSON-safe form (the Celery message); carries the key so workers need no HEAD request."""
        return {"media": self.media, "vocabulary": self.vocabulary, "checkpoint": self.checkpoint,
                "options": self.options, "headers": self.headers, "adapter": self.adapter, "key": self._key}

    @classmethod
    def from_dict(cls, d: dict) -> "JobSpec":
        if not isinstance(d, dict):
            raise InputError(f"job spec must be a JSON object, got {type(d).__name__}")
        unknown = set(d) - {"media", "vocabulary", "checkpoint", "options", "headers", "adapter", "key"}
        if unknown:
            raise InputError(f"unknown job spec field(s) {sorted(unknown)}")
        try:
            spec = cls(media=d["media"], vocabulary=d["vocabulary"], checkpoint=d["checkpoint"],
                       options=d.get("options") or {}, headers=d.get("headers"), adapter=d.get("adapter"))
        except KeyError as e:
            raise InputError(f"job spec misses the field {e.args[0]!r}") from None
        spec._key = d.get("key")
        return spec
