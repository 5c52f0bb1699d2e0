"""Video input: video files, frame directories and single images, read lazily frame by frame.

``open_video`` checks the source up front (it opens, decodes the first frame and counts the
frames it will yield), so every problem surfaces as one ``InputError`` before any model runs and
``info.num_frames`` is exact before iteration starts. Iterating decodes one frame at a time; the
whole video is never held in memory.

Frame selection, applied in this order on the source's frames ``0..N-1`` (time ``t = i / fps``):
``start_time <= t < end_time``, then every ``frame_stride``-th frame, then at most ``max_frames``.
Frame directories and images carry no frame rate: they use ``default_fps`` (30, the rate of the
YouTube-VIS / LV-VIS source videos).
"""
from __future__ import annotations

import logging
import math
import numbers
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import InputError
from .tracks import VideoInfo

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, int, int]] = set()  # a file is opened more than once per run: say it once

DEFAULT_FPS = 30.0
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".ogv", ".3gp", ".gif", ".y4m",
})
# A container claiming more than this is misreporting (OpenCV returns e.g. 90000 for some webm).
_MAX_PLAUSIBLE_FPS = 1000.0
_LOGS_QUIETED = False


def _natural_key(name: str) -> list:
    # "frame_2.jpg" before "frame_10.jpg" even without zero padding.
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_options(frame_stride, start_time, end_time, max_frames, default_fps) -> None:
    if not _is_int(frame_stride) or frame_stride < 1:
        raise InputError(f"invalid frame stride {frame_stride!r}: use a whole number >= 1 (1 = every frame)")
    for name, v in (("start time", start_time), ("end time", end_time)):
        if v is not None and (not isinstance(v, numbers.Real) or isinstance(v, bool)):
            raise InputError(f"invalid {name} {v!r}: use a number of seconds")
    if start_time is not None and (not math.isfinite(start_time) or start_time < 0):
        raise InputError(f"invalid start time {start_time!r}: use seconds >= 0")
    if end_time is not None and (not math.isfinite(end_time) or end_time <= 0):
        raise InputError(f"invalid end time {end_time!r}: use seconds > 0")
    if start_time is not None and end_time is not None and end_time <= start_time:
        raise InputError(f"invalid time range: end time {end_time} s must be after start time {start_time} s")
    if max_frames is not None and (not _is_int(max_frames) or max_frames < 1):
        raise InputError(f"invalid max frames {max_frames!r}: use a whole number >= 1, or leave it unset for all frames")
    if not (default_fps > 0 and math.isfinite(default_fps)):
        raise InputError(f"invalid default fps {default_fps!r}: use a positive number")


def _time_bounds(fps: float, start_time: float | None, end_time: float | None) -> tuple[int, int | None]:
    """Source index range [first, stop) for ``start_time <= i / fps < end_time``."""
    eps = 1e-6  # 0.1 s * 10 fps must give frame 1, not 0.99999
    first = 0 if start_time is None else max(0, math.ceil(start_time * fps - eps))
    stop = None if end_time is None else max(0, math.ceil(end_time * fps - eps))
    return first, stop


def _read_image(path: Path) -> np.ndarray:
    import cv2

    # imread honours EXIF orientation and turns grey/alpha images into 3-channel 8-bit.
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read image {path}: the file is corrupt or not an image; re-save it as JPEG or PNG")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF rotation applied), from the header only; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            rotated = im.getexif().get(0x0112) in (5, 6, 7, 8)  # orientations that swap the axes
    except Exception:  # a corrupt frame fails with its own message when it is decoded
        return None
    return (h, w) if rotated else (w, h)


def _check_frame_sizes(images: list[Path]) -> None:
    """Every selected frame of a directory has the first one's size: checked from the headers
    (~0.1 ms a frame) when the directory is opened, long before the model loads."""
    sizes = [(p, _header_size(p)) for p in images]
    known = [(p, s) for p, s in sizes if s is not None]
    if not known:
        return
    first, size = known[0]
    for p, s in known[1:]:
        if s != size:
            raise InputError(f"frame {p.name} is {s[0]}x{s[1]} but {first.name} is {size[0]}x{size[1]}: all frames "
                             "of a directory must have one size (resize them, or split the directory)")


def _quiet_decoder_logs() -> None:
    """Keep FFmpeg's and OpenCV's own console chatter off stderr: our InputError is the one message.

    Done on first use, not at import; a user's own OPENCV_* settings win.
    """
    global _LOGS_QUIETED
    if _LOGS_QUIETED:
        return
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read when the first capture opens
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    _LOGS_QUIETED = True


def _open_capture(path: Path):
    import cv2

    _quiet_decoder_logs()

    # FFmpeg backend explicitly: OpenCV's fallback would treat some names as image-sequence patterns.
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise InputError(
            f"cannot decode video {path}: the file is corrupt or in an unsupported format; "
            f"check it plays, or convert it: ffmpeg -i {path.name} -c:v libx264 -pix_fmt yuv420p out.mp4"
        )
    return cap


class VideoReader:
    """Frames of one source, decoded lazily. Iterate for ``(position, RGB uint8 HxWx3)``.

    Re-iterable (each iteration decodes from the start); use as a context manager or call
    ``close()`` to release a decoder left open by an unfinished iteration.
    """

    def __init__(self, source: str | Path, frame_stride: int = 1, start_time: float | None = None,
                 end_time: float | None = None, max_frames: int | None = None,
                 default_fps: float = DEFAULT_FPS, frame_indices: Sequence[int] | None = None):
        _check_options(frame_stride, start_time, end_time, max_frames, default_fps)
        path = Path(source).expanduser()
        if not path.exists():
            raise InputError(f"video not found: {path}: check the path (a video file, an image or a directory of frames)")
        self.path = path
        self._caps: list = []  # open decoders of running iterations, released by close()
        self._images: list[Path] | None = None  # frame files for directories and single images
        # Exact total number of source frames, or None when counting stopped early because the
        # requested range/max_frames ended first (counting long videos costs a decode pass).
        self.source_frame_count: int | None = None

        if path.is_dir():
            self.kind = "frames"
            # Hidden files are skipped: macOS copies leave "._00001.jpg" resource forks beside frames.
            images = sorted((p for p in path.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()),
                            key=lambda p: _natural_key(p.name))
            if not images:
                raise InputError(
                    f"no images in directory {path}: a frame directory holds one .jpg/.png per frame "
                    f"(YouTube-VIS / LV-VIS layout); pass a video file or such a directory"
                )
            self._images, fps = images, default_fps
            height, width = _read_image(images[0]).shape[:2]
            self.source_frame_count = len(images)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            self.kind = "image"
            self._images, fps = [path], default_fps
            height, width = _read_image(path).shape[:2]
            self.source_frame_count = 1
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            self.kind = "video"
            fps, height, width = self._probe_video(path, default_fps)
        else:
            raise InputError(
                f"unsupported input {path.name!r}: pass a video ({', '.join(sorted(VIDEO_SUFFIXES))}), "
                f"an image ({', '.join(sorted(IMAGE_SUFFIXES))}) or a directory of frames"
            )

        if frame_indices is not None:
            indices = self._explicit_selection(path, fps, frame_indices)
        else:
            indices = self._range_selection(path, fps, frame_stride, start_time, end_time, max_frames)
        self._wanted = frozenset(indices)
        if self.kind == "frames":
            _check_frame_sizes([self._images[i] for i in indices])
        self.info = VideoInfo(source=str(path), width=int(width), height=int(height), fps=float(fps),
                              num_frames=len(indices), frame_indices=indices)

    def _total_frames(self, path: Path, limit: int | None) -> int:
        """Frames available up to ``limit`` (all when None); raises when there are none."""
        if self.kind == "video":
            self.source_frame_count = self._count_frames(path, limit)
            total = self.source_frame_count if self.source_frame_count is not None else limit
        else:
            total = self.source_frame_count
        if total == 0:
            raise InputError(f"video {path} has no decodable frames: re-encode it (ffmpeg -i IN -c:v libx264 out.mp4)")
        return total

    def _range_selection(self, path, fps, frame_stride, start_time, end_time, max_frames) -> list[int]:
        first, stop = _time_bounds(fps, start_time, end_time)
        limit = stop
        if max_frames is not None:  # no need to count beyond the last frame that will be yielded
            last_needed = first + (max_frames - 1) * frame_stride + 1
            limit = last_needed if limit is None else min(limit, last_needed)
        total = self._total_frames(path, limit)
        stop = total if stop is None else min(stop, total)
        if first >= stop:
            raise InputError(
                f"no frames selected in {path}: the range starts at {start_time} s but the video is "
                f"{total / fps:.3f} s long ({total} frames at {fps:g} fps); choose an earlier start time"
            )
        indices = list(range(first, stop, frame_stride))
        return indices[:max_frames] if max_frames is not None else indices

    def _explicit_selection(self, path, fps, frame_indices) -> list[int]:
        indices = sorted({int(i) for i in frame_indices})
        if not indices or indices[0] < 0:
            raise InputError(f"invalid frame indices for {path}: pass source frame numbers >= 0")
        total = self._total_frames(path, indices[-1] + 1)
        if indices[-1] >= total:
            raise InputError(
                f"{path} has {total} frames but frame {indices[-1]} was requested: is this the video the tracks were made from?"
            )
        return indices

    # -- probing ---------------------------------------------------------------------------
    @staticmethod
    def _probe_video(path: Path, default_fps: float) -> tuple[float, int, int]:
        import cv2

        cap = _open_capture(path)
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok or frame is None:
            raise InputError(
                f"video {path} has no decodable frames: it is empty or corrupt; re-encode it "
                f"(ffmpeg -i {path.name} -c:v libx264 -pix_fmt yuv420p out.mp4)"
            )
        if not (math.isfinite(fps) and 0 < fps <= _MAX_PLAUSIBLE_FPS):
            fps = default_fps
        # The decoded frame, not CAP_PROP_FRAME_WIDTH, is the truth (rotation metadata is applied).
        return fps, frame.shape[0], frame.shape[1]

    @staticmethod
    def _count_frames(path: Path, limit: int | None) -> int | None:
        """Frames the decoder really delivers (containers' frame counts lie, webm/mkv often say 0).

        grab() demuxes and decodes without colour conversion. Returns None when ``limit`` frames
        exist (the selection needs no more), else the exact count.
        """
        import cv2

        cap = _open_capture(path)
        n = 0
        try:
            declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            while limit is None or n < limit:
                if not cap.grab():
                    break
                n += 1
            else:
                return None
        finally:
            cap.release()
        # Counts differ by a frame or two (edit lists, VFR); far fewer usually means a cut-off file,
        # whose frames would otherwise be segmented without a word.
        if 0 < n < 0.9 * declared and declared - n >= 2 and (str(path), n, declared) not in _WARNED:
            _WARNED.add((str(path), n, declared))
            log.warning("video %s: only %d of the %d frames its container declares decode: the file looks "
                        "truncated or damaged; segmenting those %d (re-encode or re-copy it to check)",
                        path, n, declared, n)
        return n

    # -- iteration -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.info.num_frames

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        return self.iter_from(0)

    def iter_from(self, start: int) -> Iterator[tuple[int, np.ndarray]]:
        """Frames from position ``start`` on; earlier ones are skipped without colour conversion
        (a video still decodes them: seeking is not frame-exact for every codec)."""
        if self._images is not None:
            return self._iter_images(start)
        return self._iter_video(start)

    def _iter_images(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        size = (self.info.height, self.info.width)
        for pos, idx in enumerate(self.info.frame_indices):
            if pos < start:
                continue
            frame = _read_image(self._images[idx])
            if frame.shape[:2] != size:
                raise InputError(
                    f"frame {self._images[idx].name} is {frame.shape[1]}x{frame.shape[0]} but the first frame is "
                    f"{size[1]}x{size[0]}: all frames of a directory must have one size"
                )
            yield pos, frame

    def _iter_video(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        import cv2

        cap = _open_capture(self.path)
        self._caps.append(cap)
        n, wanted = self.info.num_frames, self._wanted
        pos = 0
        try:
            for idx in range(self.info.frame_indices[-1] + 1):
                if idx not in wanted or pos < start:
                    if not cap.grab():
                        break
                    pos += idx in wanted
                    continue
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                if bgr.shape[:2] != (self.info.height, self.info.width):
                    # Mid-stream resolution changes: keep every frame the size the tracks describe.
                    bgr = cv2.resize(bgr, (self.info.width, self.info.height), interpolation=cv2.INTER_AREA)
                yield pos, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                pos += 1
            if pos < n:
                raise InputError(
                    f"video {self.path} stopped decoding at frame {pos} of {n}: the file is damaged; "
                    f"re-encode it (ffmpeg -i {self.path.name} -c:v libx264 -pix_fmt yuv420p out.mp4)"
                )
        finally:
            cap.release()
            if cap in self._caps:
                self._caps.remove(cap)

    def close(self) -> None:
        for cap in self._caps:
            cap.release()
        self._caps.clear()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"VideoReader({i.source!r}, {i.width}x{i.height}, {i.fps:g} fps, {i.num_frames} frames)"


def open_video(source: str | Path, frame_stride: int = 1, start_time: float | None = None,
               end_time: float | None = None, max_frames: int | None = None,
               default_fps: float = DEFAULT_FPS, frame_indices: Sequence[int] | None = None) -> VideoReader:
    """Open and check a video file, a frame directory or an image; raise ``InputError`` on bad input.

    ``frame_indices`` (source frame numbers, e.g. ``VideoTracks.video.frame_indices``) selects
    exactly those frames instead of stride/range/max: how exporters re-read a processed video.
    """
    return VideoReader(source, frame_stride, start_time, end_time, max_frames, default_fps, frame_indices)
