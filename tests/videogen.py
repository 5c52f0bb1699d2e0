"""Synthetic test media: real video files of moving shapes, written with OpenCV (or ffmpeg for H.264)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

FOURCC = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "MJPG", ".mov": "mp4v", ".webm": "VP80"}


def shape_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """[T, H, W, 3] uint8 RGB: a disc moving right, a rectangle moving down, a blinking square."""
    rng = np.random.default_rng(seed)
    bg = rng.integers(20, 60, size=3)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        f = np.empty((height, width, 3), np.uint8)
        f[:] = bg
        cx = int(width * (0.2 + 0.6 * t / max(num_frames - 1, 1)))
        cv2.circle(f, (cx, height // 3), max(3, min(height, width) // 8), (220, 40, 40), -1)
        y0 = int(height * (0.4 + 0.3 * t / max(num_frames - 1, 1)))
        cv2.rectangle(f, (width // 10, y0), (width // 10 + width // 5, min(height - 1, y0 + height // 6)), (40, 200, 60), -1)
        if t % 2 == 0:
            s = max(2, min(height, width) // 10)
            cv2.rectangle(f, (width - 2 * s, height - 2 * s), (width - s, height - s), (240, 240, 240), -1)
        frames[t] = f
    return frames


def write_video(path: str | Path, frames: np.ndarray, fps: float = 10.0, codec: str | None = None) -> Path:
    """Write RGB frames to a container chosen by the suffix; ``codec='h264'`` re-encodes with ffmpeg."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if codec == "h264":
        tmp = path.with_suffix(".tmp.avi")
        write_video(tmp, frames, fps)
        ffmpeg = shutil.which("ffmpeg")
        assert ffmpeg, "ffmpeg is required for H.264 test videos (apt-get install ffmpeg)"
        subprocess.run([ffmpeg, "-y", "-loglevel", "error", "-i", str(tmp), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)
        tmp.unlink()
        return path
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*(codec or FOURCC[path.suffix])), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path.suffix}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def make_video(path: str | Path, num_frames: int = 12, height: int = 96, width: int = 128, fps: float = 10.0, seed: int = 0, codec: str | None = None) -> Path:
    return write_video(path, shape_frames(num_frames, height, width, seed), fps, codec)


def write_frame_dir(path: str | Path, frames: np.ndarray, ext: str = ".jpg") -> Path:
    """YTVIS / LV-VIS layout: one image per frame, sorted names."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(path / f"{i:05d}{ext}"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return path
