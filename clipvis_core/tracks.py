"""Result types: a video's instance tracks, with per-frame COCO RLE masks.

These are what every exporter and host consumes; they round-trip through JSON.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

FORMAT_VERSION = 1


def encode_mask(mask: np.ndarray) -> dict:
    """Binary HxW mask -> COCO compressed RLE with ``counts`` as str."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _coco(rle: dict) -> dict:
    """pycocotools wants ``counts`` as bytes; our JSON keeps them as str."""
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode(_coco(rle)).astype(bool)


def rle_box(rle: dict) -> list[float] | None:
    """Tight [x, y, w, h] box in pixels, or None for an empty mask."""
    from pycocotools import mask as mask_utils

    r = _coco(rle)
    if int(mask_utils.area(r)) == 0:
        return None
    return [float(v) for v in mask_utils.toBbox(r)]


@dataclass
class VideoInfo:
    """The video the tracks belong to (original resolution, after stride/range selection)."""

    source: str
    width: int
    height: int
    fps: float
    num_frames: int
    # Source frame index (0-based, before stride) of every processed frame.
    frame_indices: list[int] = field(default_factory=list)


@dataclass
class Track:
    id: int
    label: str  # display label (first synonym of the class)
    category_id: int  # 0-based index into the vocabulary
    score: float
    masks: list[dict]  # one COCO RLE per processed frame (empty RLE where absent)
    boxes: list[list[float] | None]  # [x, y, w, h] pixels per frame, None where the mask is empty
    frame_scores: list[float]  # per-frame score of the track's class

    def present_frames(self) -> list[int]:
        return [i for i, b in enumerate(self.boxes) if b is not None]

    def mask(self, frame: int) -> np.ndarray:
        return decode_mask(self.masks[frame])


@dataclass
class VideoTracks:
    video: VideoInfo
    vocabulary: list[str]
    tracks: list[Track]
    model: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "VideoTracks":
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported track JSON format_version {d.get('format_version')!r}; expected {FORMAT_VERSION}")
        return cls(
            video=VideoInfo(**d["video"]),
            vocabulary=list(d["vocabulary"]),
            tracks=[Track(**t) for t in d["tracks"]],
            model=d.get("model", ""),
            options=d.get("options", {}),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "VideoTracks":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        """Written incrementally (same text as ``to_json``): no second copy of every mask in RAM."""
        from .export.jsonstream import dump

        shallow = {"video": {f: getattr(self.video, f) for f in VideoInfo.__dataclass_fields__}, "vocabulary": self.vocabulary,
                   "tracks": ({f: getattr(t, f) for f in Track.__dataclass_fields__} for t in self.tracks),
                   "model": self.model, "options": self.options, "format_version": FORMAT_VERSION}
        return write_atomic(path, lambda f: dump(shallow, f))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VideoTracks":
        return cls.from_json(Path(path).read_text())


def write_atomic(path: str | os.PathLike, data: str | bytes | Callable[[BinaryIO], None]) -> Path:
    """Write via a temp file in the same directory + rename: readers never see half a file.

    Only a regular file (or nothing) is replaced: renaming over a symlink or a device node
    (``/dev/null``) would silently swap it for a plain file."""
    from .errors import InputError

    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise InputError(f"{path} exists and is not a regular file (a symlink, device or directory): "
                         "write to a plain file path instead")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        # 0o666 through os.open: the process umask applies as for any new file, and it is never
        # changed (os.umask is process-wide, racy with other threads).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            if callable(data):  # a writer streaming into the file
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.filename is None:
            e.filename = str(path)  # "No space left on device" alone does not say which file
        raise
    return path
