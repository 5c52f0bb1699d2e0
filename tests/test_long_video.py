"""Long videos: bounded temp disk per frame, flat RAM, identical outputs, and the frame store gone on
every exit path (exception, SIGTERM, SIGKILL) - measured on a real size-limited tmpfs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipvis_core.errors import ClipvisError
from clipvis_core.segmenter import SegmentOptions, SegmentTrace, get_segmenter
from clipvis_core.store import DiskFullError
from clipvis_core.tracks import decode_mask
from videogen import shape_frames, write_video

VOCAB = ["person", "car, automobile", "red ball", "green box"]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seg(tiny_card):
    return get_segmenter(str(tiny_card), device="cpu")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def long_video(path: Path, n: int, h: int = 64, w: int = 96) -> Path:
    """Shapes crossing the frame again every 100 frames (written in chunks, never all in RAM)."""
    import cv2

    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (w, h))
    for start in range(0, n, 100):
        for f in shape_frames(100, h, w, seed=start // 100)[: n - start]:
            out.write(np.ascontiguousarray(f[..., ::-1]))
    out.release()
    return path


def test_long_video_bounded_disk_flat_ram(seg, tmp_path):
    n = 2000
    path = long_video(tmp_path / "long.avi", n)
    opts = SegmentOptions(min_size=64)
    q, c = seg.cfg.decoder.num_queries, len(VOCAB)
    raw_per_frame = 4 * q * (64 // 4 * 96 // 4 + c + 2)  # what the store used to write (float32 logits)
    marks = {}

    def on(p):
        if p.result is None and p.frames_done in (n // 4, n // 2, n):
            marks[p.frames_done] = (p.temp_bytes, rss_mib())

    t0 = time.perf_counter()
    result = seg.segment(str(path), VOCAB, opts, progress=on)
    elapsed = time.perf_counter() - t0
    assert result.video.num_frames == n and all(len(t.masks) == n for t in result.tracks)
    per_frame = {k: b / k for k, (b, _) in marks.items()}
    # Disk per frame is constant in the video's length and well under the raw logits.
    assert per_frame[n] <= raw_per_frame / 4
    assert abs(per_frame[n] - per_frame[n // 4]) <= 0.1 * per_frame[n // 4]
    # RAM flat while frames stream through (the final pass builds the result, O(frames) RLE strings).
    assert marks[n][1] - marks[n // 4][1] <= 20, marks
    print(f"{n} frames in {elapsed:.0f} s: temp disk {per_frame[n]:.0f} B/frame (raw logits {raw_per_frame} B), "
          f"RSS {marks[n // 4][1]:.0f} -> {marks[n][1]:.0f} MiB")


def test_outputs_equal_resizing_raw_logits_at_the_end(seg, tmp_path):
    """The traced run keeps the raw logits and resizes them at the end, the way the store used to:
    every stored mask equals that resize, thresholded, bit for bit (prefix of the long video)."""
    path = long_video(tmp_path / "prefix.avi", 120)
    for out_size in (None, (150, 200), (41, 57)):
        opts = SegmentOptions(min_size=64, output_size=out_size)
        trace = SegmentTrace()
        traced = seg.segment(str(path), VOCAB, opts, trace=trace)
        plain = seg.segment(str(path), VOCAB, opts)
        assert traced.to_dict() == plain.to_dict()
        order = np.argsort([-float(s) for s in trace.instances.scores], kind="stable")
        for rank, k in enumerate(order):
            tr = plain.tracks[rank]
            for t in range(len(tr.masks)):
                want = (trace.instances.logits[t][k] > 0).numpy()
                assert np.array_equal(decode_mask(tr.masks[t]), want)


def test_device_run_lengths_equal_pycocotools():
    """The GPU store path (resize, threshold and run lengths in torch, compressed by pycocotools)
    writes the same RLE bytes as the CPU path; run here on CPU tensors, edge cases included."""
    import torch

    from clipvis_core.store import OutputGeometry, _device_rles, output_rles

    g = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.randn(1, 20, 6, 9, generator=g), size=(31, 47), mode="bilinear")[0]
    edge = torch.full((4, 31, 47), -1.0)
    edge[1] = 1.0  # all set
    edge[2, 0, 0] = 1.0  # only the first pixel (an empty leading 0-run)
    edge[3, -1, -1] = 1.0  # only the last pixel
    logits = torch.cat([smooth, torch.randn(3, 31, 47, generator=g), edge])  # 27 queries: two chunks
    for pad, img, out in (((124, 188), (120, 180), (120, 180)), ((124, 188), (117, 181), (61, 97))):
        geom = OutputGeometry(padded_hw=pad, image_hw=img, out_hw=out)
        assert _device_rles(logits, geom) == output_rles(logits, geom)


# -- exit paths, on a real size-limited file system ---------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_disk_full_is_one_line_error(seg, small_disk, monkeypatch):
    monkeypatch.setenv("CLIPVIS_TMPDIR", str(small_disk))
    frames = shape_frames(400, 96, 128)
    with pytest.raises(DiskFullError) as e:
        seg.segment(frames, VOCAB, SegmentOptions(min_size=96))
    msg = str(e.value)
    assert "no space left" in msg and "CLIPVIS_TMPDIR" in msg and str(small_disk) in msg and "\n" not in msg
    assert isinstance(e.value, ClipvisError)
    assert used_bytes(small_disk) == 0 and os.listdir(small_disk) == []


def test_exception_mid_video_frees_the_store(seg, small_disk, monkeypatch):
    monkeypatch.setenv("CLIPVIS_TMPDIR", str(small_disk))
    seen = []

    def boom(p):
        seen.append(used_bytes(small_disk))
        if p.frames_done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        seg.segment(shape_frames(40, 64, 96), VOCAB, SegmentOptions(min_size=64), progress=boom)
    assert seen[-1] > 0  # the store was on this disk ...
    assert used_bytes(small_disk) == 0  # ... and is gone


CHILD = """
import sys, time
from clipvis_core.segmenter import SegmentOptions, get_segmenter
seg = get_segmenter(sys.argv[1], device="cpu")
for p in seg.iter_segment(sys.argv[2], ["person", "car"], SegmentOptions(min_size=64)):
    if p.frames_done == 10:
        print("running", flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_process_leaves_no_store(tiny_card, small_disk, tmp_path, sig):
    video = write_video(tmp_path / "v.avi", shape_frames(30, 64, 96))
    env = {**os.environ, "CLIPVIS_TMPDIR": str(small_disk)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tiny_card), str(video)], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "running"
        assert used_bytes(small_disk) > 0 and os.listdir(small_disk) == []  # anonymous (unlinked) files
        child.send_signal(sig)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert used_bytes(small_disk) == 0
