"""Overlay video: the source frames with each track's mask, box and "label #id score" drawn in.

Browsers must play it: ``.mp4`` is H.264 (yuv420p, faststart) through ffmpeg when ffmpeg is
installed, else VP9-in-MP4 through OpenCV (slow: ~6 frames/s at 480p); ``.webm`` is VP9 (ffmpeg)
or VP8 (OpenCV). Frames are
re-read from the source with ``open_video(frame_indices=...)`` and written one at a time, to a
temp file that is renamed into place when complete.
"""
from __future__ import annotations

import colorsys
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from ..tracks import Track, VideoTracks, decode_mask
from ..video import open_video

SUFFIXES = (".mp4", ".webm")


def track_color(track_id: int) -> tuple[int, int, int]:
    """A distinct, stable RGB colour per track id (golden-ratio hue steps)."""
    h = (track_id * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_tracks(frame: np.ndarray, tracks: list[Track], pos: int, alpha: float = 0.45) -> np.ndarray:
    """Draw every track present at processed frame ``pos`` onto a copy of an RGB frame."""
    import cv2

    out = frame.copy()
    h, w = out.shape[:2]
    scale = float(np.clip(min(h, w) / 720.0, 0.35, 1.0))
    thick = max(1, round(2 * scale))
    for t in tracks:
        box = t.boxes[pos]
        if box is None:
            continue
        color = np.array(track_color(t.id), np.float32)
        mask = decode_mask(t.masks[pos])
        out[mask] = (out[mask] * (1 - alpha) + color * alpha).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = tuple(int(v) for v in color)
        cv2.drawContours(out, contours, -1, c, thick)
        x, y, bw, bh = (int(round(v)) for v in box)
        cv2.rectangle(out, (x, y), (x + bw - 1, y + bh - 1), c, thick)
        _label(out, f"{t.label} #{t.id} {t.score:.2f}", x, y, c, scale)
    return out


def _label(img: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    import cv2

    font, fs, th = cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale + 0.15, 1
    (tw, tht), base = cv2.getTextSize(text, font, fs, th)
    h, w = img.shape[:2]
    x = int(np.clip(x, 0, max(0, w - tw - 2)))
    top = y - tht - base - 2 if y - tht - base - 2 >= 0 else min(y + 1, max(0, h - tht - base - 2))
    cv2.rectangle(img, (x, top), (x + tw + 2, top + tht + base + 2), color, -1)
    # Dark text on light colours, white on dark ones.
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, top + tht + 1), font, fs, ink, th, cv2.LINE_AA)


class _FfmpegWriter:
    def __init__(self, path: Path, width: int, height: int, fps: float):
        enc = (["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4"]
               if path.suffix == ".mp4" else
               ["-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "34", "-deadline", "realtime", "-cpu-used", "8",
                "-pix_fmt", "yuv420p", "-f", "webm"])
        self._log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty ffmpeg cannot block on it
        self._proc = subprocess.Popen(
            [shutil.which("ffmpeg"), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
             "-s", f"{width}x{height}", "-r", f"{fps:.6g}", "-i", "pipe:0", "-an", *enc, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log)

    def write(self, rgb: np.ndarray) -> None:
        try:
            self._proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
        except BrokenPipeError:
            self.close()  # raises with ffmpeg's own message

    def close(self) -> None:
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        rc = self._proc.wait()
        self._log.seek(0)
        msg = self._log.read().decode(errors="replace").strip().splitlines()
        self._log.close()
        if rc != 0:
            raise RuntimeError(f"ffmpeg failed writing the overlay video (exit {rc}): {msg[-1] if msg else ''}")

    def abort(self) -> None:
        self._proc.kill()
        self._proc.wait()
        self._log.close()


class _OpenCVWriter:
    def __init__(self, path: Path, width: int, height: int, fps: float):
        import cv2

        # VP8 first for webm: OpenCV's VP9 encoder runs ~6 frames/s at 480p, VP8 several times faster.
        fourccs = ["vp09"] if path.suffix == ".mp4" else ["VP80", "VP90"]
        for fcc in fourccs:
            self._w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fcc), fps, (width, height))
            if self._w.isOpened():
                return
        raise RuntimeError(f"OpenCV cannot write {path.suffix} video here; install ffmpeg")

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        self._w.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self._w.release()

    abort = close


def _even(frame: np.ndarray) -> np.ndarray:
    # yuv420p needs even sizes; pad one black row/column rather than resample or crop.
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def write_overlay(tracks: VideoTracks, path: str | os.PathLike, source: str | os.PathLike | None = None,
                  min_score: float = 0.0, alpha: float = 0.45, use_ffmpeg: bool | None = None,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    """Render ``tracks`` over their source video into ``path`` (.mp4 or .webm); returns the path.

    ``source`` defaults to ``tracks.video.source``; ``use_ffmpeg=None`` uses ffmpeg when installed.
    ``progress(frames_done, frames_total)`` is called after every frame.
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"overlay path {path.name!r}: use a .mp4 or .webm file name (formats browsers play)")
    info = tracks.video
    if not info.frame_indices:
        raise InputError("the tracks hold no frames: nothing to draw")
    reader = open_video(source or info.source, default_fps=info.fps, frame_indices=info.frame_indices)
    if (reader.info.width, reader.info.height) != (info.width, info.height):
        raise InputError(
            f"{reader.info.source} is {reader.info.width}x{reader.info.height} but the tracks are for a "
            f"{info.width}x{info.height} video: pass the video the tracks were made from"
        )
    shown = [t for t in tracks.tracks if t.score >= min_score]
    # The processed frames play at the rate they were sampled at.
    step = (info.frame_indices[-1] - info.frame_indices[0]) / max(1, len(info.frame_indices) - 1)
    fps = info.fps / step if step > 0 else info.fps
    width, height = info.width + info.width % 2, info.height + info.height % 2
    if use_ffmpeg is None:
        use_ffmpeg = shutil.which("ffmpeg") is not None

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix.lower()}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the overlay is meant to be served/shared
    writer = (_FfmpegWriter if use_ffmpeg else _OpenCVWriter)(tmp, width, height, fps)
    try:
        with reader:
            for pos, frame in reader:
                writer.write(_even(draw_tracks(frame, shown, pos, alpha)))
                if progress is not None:
                    progress(pos + 1, info.num_frames)
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.abort()
        tmp.unlink(missing_ok=True)
        raise
    return path
