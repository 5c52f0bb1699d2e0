"""Video input / overlay throughput: frame counting, decoding, overlay encoding. Prints figures.

    .venv/bin/python benchmarks/video_io.py [--frames 300] [--height 480] [--width 854]

Generates an H.264 test-pattern video with ffmpeg in a temp dir; peak RSS is reported to show
that reading and overlay writing stream (it stays flat as --frames grows).
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipvis_core.export.overlay import write_overlay  # noqa: E402
from clipvis_core.tracks import Track, VideoInfo, VideoTracks, encode_mask, rle_box  # noqa: E402
from clipvis_core.video import open_video  # noqa: E402


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=854)
    ap.add_argument("--tracks", type=int, default=5)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "bench.mp4"
        # ffmpeg's moving test pattern: realistic detail for the decoder, no frames held in RAM.
        subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size={a.width}x{a.height}:rate=30",
                        "-frames:v", str(a.frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src)], check=True)
        rss0 = _rss_mib()

        t = time.perf_counter()
        reader = open_video(src)
        t_open = time.perf_counter() - t
        t = time.perf_counter()
        n = sum(1 for _ in reader)
        t_dec = time.perf_counter() - t
        print(f"video: {a.frames} frames {a.width}x{a.height} H.264")
        print(f"open_video (probe + exact count): {t_open:.2f} s ({a.frames / t_open:.0f} frames/s)")
        print(f"decode to RGB: {t_dec:.2f} s ({n / t_dec:.0f} frames/s)")
        t = time.perf_counter()
        r4 = open_video(src, frame_stride=4)
        sum(1 for _ in r4)
        print(f"open + decode at stride 4: {time.perf_counter() - t:.2f} s")

        # Overlay with N full-video tracks (a box each), the realistic export cost.
        info = reader.info
        tracks = []
        for k in range(a.tracks):
            m = np.zeros((info.height, info.width), bool)
            m[20 + 10 * k: 120 + 10 * k, 40 * k + 10: 40 * k + 110] = True
            rle = encode_mask(m)
            tracks.append(Track(k + 1, f"class{k}", k, 0.5, [rle] * n, [rle_box(rle)] * n, [0.5] * n))
        vt = VideoTracks(VideoInfo(**{**info.__dict__}), [f"class{k}" for k in range(a.tracks)], tracks)
        for use_ffmpeg, name in [(True, "overlay.mp4"), (False, "overlay.webm")]:
            t = time.perf_counter()
            write_overlay(vt, Path(d) / name, use_ffmpeg=use_ffmpeg)
            dt = time.perf_counter() - t
            print(f"overlay {name} ({'ffmpeg' if use_ffmpeg else 'OpenCV'}, {a.tracks} tracks): {dt:.2f} s ({n / dt:.1f} frames/s)")
        print(f"peak RSS: {_rss_mib():.0f} MiB (before reading: {rss0:.0f} MiB)")


if __name__ == "__main__":
    main()
