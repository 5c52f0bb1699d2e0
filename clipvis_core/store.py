"""Disk-backed per-frame storage for the final instance selection: small, and exact.

Which (track, class) pairs become instances is only known after the last frame, so every query's
per-frame data is kept until then - on disk (plain file I/O, no mmap), so RAM stays flat. The
store keeps what the final pass *uses* rather than raw logits (``4*Q*h/4*w/4`` bytes a frame):

* class probabilities ``[Q, C]`` and object logits ``[Q, 2]``, float32 (for ``frame_keep``);
* per query, the two float32 sums of the mask score (``sum(sigmoid(m) * (m > 0))``, ``count(m > 0)``),
  computed from the full-precision logits with the same ops ``MaskScore.add`` uses;
* per query, the output mask itself: the logits resized exactly as the final pass resizes them
  (``masks_to_output_logits``, on the network's device), thresholded, COCO-RLE encoded,
  zlib-compressed.

The final pass then only picks the RLEs of the selected queries in their kept frames: outputs are
identical to resizing at the end (masks of dropped frames are blank either way). A traced run also
keeps the raw logits, because the trace records output-resolution logits.

Files are unlinked as soon as they are created, so the kernel frees them on every exit path -
exception, SIGTERM, SIGKILL - and no stale store can outlive its process. The one exception is a
resumable job (``resume.py``): its store is named files in the job's checkpoint directory, made
to outlive a lost process on purpose; ``mark()`` says how far they are valid and a resumed store
is truncated back to that mark.
"""
from __future__ import annotations

import errno
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from .errors import ClipvisError
from .scoring import masks_to_output_logits

_INDEX = struct.Struct("<QQ")  # (offset, length) of one frame's mask record
_CHUNK = 16  # queries resized at once: bounds the full-resolution temporaries


class DiskFullError(ClipvisError):
    """The temp file system filled up while storing frames."""


@dataclass(frozen=True)
class StoreMark:
    """How much of a named store is valid: the frames written and the end of the RLE file."""

    frames: int
    rles_end: int
    bytes_written: int


@dataclass(frozen=True)
class OutputGeometry:
    """How low-res mask logits become output masks (see ``masks_to_output_logits``)."""

    padded_hw: tuple[int, int]
    image_hw: tuple[int, int]
    out_hw: tuple[int, int]


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (atomic writes: temp file, fsync, rename, this)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mask_sums(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query float32 sums MaskScore accumulates (same ops, so the same rounding)."""
    pos = (m > 0).to(m.dtype)
    return (m.sigmoid() * pos).flatten(1).sum(1), pos.flatten(1).sum(1)


def output_rles(m: torch.Tensor, geom: OutputGeometry) -> list[bytes]:
    """[Q, h/4, w/4] logits -> Q COCO RLE ``counts`` of the thresholded output-resolution masks.

    On the CPU pycocotools encodes the thresholded masks; on a GPU the resize, threshold and run
    lengths stay on the device (moving 50 full-size masks a frame to the host and encoding them
    there cost more than the network at 480p) and only the run lengths cross to the host.
    """
    if m.device.type != "cpu":
        return _device_rles(m, geom)
    counts: list[bytes] = []
    for x in _output_logits(m, geom):
        # Thresholded straight into the column-major [H, W, K] layout pycocotools reads (as [K, W, H]
        # rows), instead of thresholding, converting to uint8 and transposing in three passes.
        k, h, w = x.shape
        out = torch.empty(k, w, h, dtype=torch.bool)
        torch.gt(x.transpose(1, 2), 0, out=out)
        rles = mask_utils.encode(out.view(torch.uint8).numpy().transpose(2, 1, 0))
        counts += [r["counts"] for r in rles]
    return counts


def _output_logits(m: torch.Tensor, geom: OutputGeometry):
    """Output-resolution logits, ``_CHUNK`` queries at a time (bounds the full-size temporaries)."""
    for i in range(0, len(m), _CHUNK):
        yield masks_to_output_logits(m[i:i + _CHUNK], geom.padded_hw, geom.image_hw, geom.out_hw)


def _device_rles(m: torch.Tensor, geom: OutputGeometry) -> list[bytes]:
    h, w = geom.out_hw
    counts: list[bytes] = []
    for x in _output_logits(m, geom):
        runs = run_lengths(x.transpose(1, 2).reshape(len(x), -1) > 0)
        counts += [r["counts"] for r in mask_utils.frPyObjects([{"size": [h, w], "counts": c} for c in runs], h, w)]
    return counts


def run_lengths(b: torch.Tensor) -> list[np.ndarray]:
    """[K, N] bool (each row a column-major mask) -> K uncompressed COCO run lengths (uint32):
    alternating runs of 0s and 1s, the 0s first (an empty one when the first pixel is set)."""
    k, n = b.shape
    edge = torch.ones(k, n + 1, dtype=torch.bool, device=b.device)  # runs start at 0 and end at n
    torch.ne(b[:, 1:], b[:, :-1], out=edge[:, 1:n])
    row, pos = edge.nonzero(as_tuple=True)
    per = torch.bincount(row, minlength=k).cpu().tolist()
    first = b[:, 0].cpu().tolist()
    pos = pos.cpu().numpy()
    out, start = [], 0
    for j, c in enumerate(per):
        gaps = np.diff(pos[start:start + c]).astype(np.uint32)
        start += c
        out.append(np.concatenate((np.zeros(1, np.uint32), gaps)) if first[j] else gaps)
    return out


def _pack(counts: list[bytes]) -> bytes:
    head = struct.pack(f"<I{len(counts)}I", len(counts), *(len(c) for c in counts))
    return zlib.compress(head + b"".join(counts), 1)


def _unpack(buf: bytes) -> list[bytes]:
    raw = zlib.decompress(buf)
    (n,) = struct.unpack_from("<I", raw)
    lens = struct.unpack_from(f"<{n}I", raw, 4)
    out, pos = [], 4 + 4 * n
    for k in lens:
        out.append(raw[pos:pos + k])
        pos += k
    return out


class FrameStore:
    """Per-frame records in anonymous temp files; ``keep_raw`` also keeps the raw float32 logits.

    ``directory``: named files there instead (a resumable job's store), continued from ``resume``.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], geom: OutputGeometry, tmp_dir: str | None = None,
                 keep_raw: bool = False, directory: Path | None = None, resume: StoreMark | None = None):
        if directory is not None and keep_raw:
            raise ValueError("a traced run keeps raw logits and cannot be resumed: pass no directory")
        self.base = str(directory) if directory is not None else tmp_dir or os.environ.get("CLIPVIS_TMPDIR") or tempfile.gettempdir()
        self.named = directory is not None
        self.geom, self.keep_raw = geom, keep_raw
        self.mask_shape = tuple(shapes["masks"])
        q = self.mask_shape[0]
        self.fixed_shapes = {**{k: tuple(s) for k, s in shapes.items() if k != "masks"}, "mask_num": (q,), "mask_den": (q,)}
        self.fixed_bytes = {k: int(np.prod(s)) * 4 for k, s in self.fixed_shapes.items()}
        self.frames = 0
        self.bytes_written = 0
        self._end = 0  # append offset in the rles file
        self.files = {}
        try:
            for k in [*self.fixed_shapes, "rles", "index"] + (["raw"] if keep_raw else []):
                if directory is None:
                    self.files[k] = tempfile.TemporaryFile(prefix="clipvis-store-", dir=self.base)  # already unlinked
                else:
                    path = Path(directory) / f"{k}.bin"
                    if resume is not None and not path.exists():
                        raise ValueError(f"store file {k}.bin is missing")
                    self.files[k] = open(path, "r+b" if resume is not None else "w+b")
            if resume is not None:
                self._truncate(resume)
        except OSError as e:
            self.close()
            raise self._error(e) from None
        except BaseException:
            self.close()
            raise

    def lengths(self, mark: StoreMark) -> dict[str, int]:
        """Bytes of each file that ``mark`` covers (a named store's files must be at least this long)."""
        return {**{k: mark.frames * n for k, n in self.fixed_bytes.items()}, "rles": mark.rles_end,
                "index": mark.frames * _INDEX.size}

    def _truncate(self, mark: StoreMark) -> None:
        """Drop what a lost process wrote after ``mark`` (a window in flight) and continue from there."""
        for k, n in self.lengths(mark).items():
            if os.fstat(self.files[k].fileno()).st_size < n:
                raise ValueError(f"store file {k}.bin is shorter than its checkpoint")
            self.files[k].truncate(n)
        self.frames, self._end, self.bytes_written = mark.frames, mark.rles_end, mark.bytes_written

    def mark(self, sync: bool = True) -> StoreMark:
        """Flush (and fsync) a named store; the returned mark is what a resumed run continues from."""
        try:
            for f in self.files.values():
                f.flush()
                if sync:
                    os.fsync(f.fileno())
        except OSError as e:
            raise self._error(e) from None
        return StoreMark(self.frames, self._end, self.bytes_written)

    def _error(self, e: OSError) -> ClipvisError:
        var = "CLIPVIS_RESUME_DIR" if self.named else "CLIPVIS_TMPDIR"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFullError(f"no space left for the frame store in {self.base} (about {self.bytes_per_frame():.0f} "
                                 f"bytes per frame): free space there or set {var} to a larger disk")
        return ClipvisError(f"cannot write the frame store in {self.base} ({e.strerror}): set {var} to a writable directory")

    def bytes_per_frame(self) -> float:
        return self.bytes_written / max(self.frames, 1)

    def write(self, t: int, masks: torch.Tensor, **arrays: torch.Tensor) -> None:
        """Frame ``t`` (frames arrive in order): masks [Q, h/4, w/4] logits plus the fixed-size arrays."""
        if t != self.frames:
            raise ValueError(f"frame {t} written out of order (expected {self.frames})")
        # On a GPU the masks stay there: sums and run lengths are computed on the device and only
        # they cross to the host (not the [Q, h/4, w/4] logits, 10 MB a frame at 480p).
        m = masks.detach().to(torch.float32).contiguous()
        num, den = mask_sums(m)
        arrays = {**arrays, "mask_num": num, "mask_den": den}
        rec = _pack(output_rles(m, self.geom))
        try:
            for k, n in self.fixed_bytes.items():
                self._put(k, t * n, arrays[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
            self._put("rles", self._end, rec)
            self._put("index", t * _INDEX.size, _INDEX.pack(self._end, len(rec)))
            if self.keep_raw:
                self._put("raw", t * m.numel() * 4, m.cpu().numpy().tobytes())
        except OSError as e:
            raise self._error(e) from None
        self._end += len(rec)
        self.frames = t + 1

    def _put(self, key: str, offset: int, data: bytes) -> None:
        f = self.files[key]
        f.seek(offset)
        f.write(data)
        self.bytes_written += len(data)

    def _get(self, key: str, offset: int, n: int) -> bytes:
        f = self.files[key]
        f.seek(offset)
        return f.read(n)

    def read(self, t: int, key: str) -> torch.Tensor:
        n = self.fixed_bytes[key]
        buf = self._get(key, t * n, n)
        return torch.from_numpy(np.frombuffer(buf, dtype=np.float32).reshape(self.fixed_shapes[key]).copy())

    def read_rles(self, t: int) -> list[bytes]:
        """Q RLE ``counts`` (bytes) of frame ``t``'s output masks, in query order."""
        off, n = _INDEX.unpack(self._get("index", t * _INDEX.size, _INDEX.size))
        return _unpack(self._get("rles", off, n))

    def read_raw(self, t: int) -> torch.Tensor:
        """[Q, h/4, w/4] raw logits (only with ``keep_raw``)."""
        n = int(np.prod(self.mask_shape)) * 4
        buf = self._get("raw", t * n, n)
        return torch.from_numpy(np.frombuffer(buf, dtype=np.float32).reshape(self.mask_shape).copy())

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
