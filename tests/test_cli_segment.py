"""`clipvis segment` end to end on real media with the tiny fixture checkpoint, and its bad-input paths."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from videogen import make_video, shape_frames, write_frame_dir

from clipvis_core.cli import main
from clipvis_core.tracks import VideoTracks, decode_mask

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["--class", "red ball", "--class", "car, automobile", "--class", "dog"]


def _cli(*args):
    """The real console entry point in a fresh process: exit code, stdout, stderr."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "clipvis_core", *map(str, args)], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    return p.returncode, p.stdout, p.stderr


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    corrupt = d / "random.mp4"
    corrupt.write_bytes(np.random.default_rng(1).bytes(30000))
    zero = d / "zero.avi"
    w = cv2.VideoWriter(str(zero), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    w.release()
    return {
        "mp4": make_video(d / "clip.mp4", 7, 70, 94, fps=10),
        "frames": write_frame_dir(d / "frames" / "vid", shape_frames(5, 61, 83, seed=2), ext=".png"),
        "corrupt": corrupt,
        "zero": zero,
        "dir": d,
    }


def _assert_tracks(path, num_frames, height, width):
    vt = VideoTracks.load(path)
    assert (vt.video.num_frames, vt.video.height, vt.video.width) == (num_frames, height, width)
    assert len(vt.video.frame_indices) == num_frames
    for t in vt.tracks:
        assert len(t.masks) == len(t.boxes) == num_frames
        for rle in t.masks:
            assert decode_mask(rle).shape == (height, width)
    return vt


def test_segment_video_with_overlay(media, tiny_card, tmp_path):
    out, ov = tmp_path / "t.json", tmp_path / "ov.mp4"
    rc = main(["segment", str(media["mp4"]), "--checkpoint", str(tiny_card), "-o", str(out), *CLASSES,
               "--overlay", str(ov), "--quiet"])
    assert rc == 0
    vt = _assert_tracks(out, 7, 70, 94)
    assert vt.vocabulary == ["red ball", "car, automobile", "dog"]
    assert vt.tracks, "the tiny model returns its top detections"
    cap = cv2.VideoCapture(str(ov))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 7
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 7


def test_segment_frame_dir_stride_ytvis(media, tiny_card, tmp_path):
    out = tmp_path / "ytvis.json"
    rc = main(["segment", str(media["frames"]), "--checkpoint", str(tiny_card), "-o", str(out),
               "--vocab", "ytvis2019", "--format", "ytvis", "--video-id", "12", "--stride", "2", "--quiet"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res and all(r["video_id"] == 12 for r in res)
    assert all(1 <= r["category_id"] <= 40 for r in res)
    for r in res:
        assert len(r["segmentations"]) == 3  # frames 0, 2, 4
        assert decode_mask(r["segmentations"][0]).shape == (61, 83)


def test_segment_image_as_one_frame(media, tiny_card, tmp_path):
    img = tmp_path / "still.jpg"
    cv2.imwrite(str(img), cv2.cvtColor(shape_frames(1, 45, 67)[0], cv2.COLOR_RGB2BGR))
    out, ov = tmp_path / "img.json", tmp_path / "img.webm"
    assert main(["segment", str(img), "--checkpoint", str(tiny_card), "-o", str(out), "--class", "red ball",
                 "--overlay", str(ov), "-q"]) == 0
    vt = _assert_tracks(out, 1, 45, 67)
    assert vt.video.frame_indices == [0]
    cap = cv2.VideoCapture(str(ov))
    assert cap.read()[0] and not cap.read()[0]  # exactly one frame


def test_segment_progress_bar_and_summary(media, tiny_card, tmp_path):
    out = tmp_path / "t.json"
    rc, stdout, err = _cli("segment", media["mp4"], "--checkpoint", tiny_card, "-o", out, *CLASSES,
                           "--max-frames", "4", "--device", "cpu")
    assert rc == 0, err
    assert "segment" in err and "4/4" in err and "frame/s" in err
    assert "tracks over 4 frames" in err
    _assert_tracks(out, 4, 70, 94)


@pytest.mark.parametrize("case", ["missing", "corrupt", "zero", "empty vocab", "unknown checkpoint", "bad stride",
                                  "bad overlay name", "start after end", "output is a file's child"])
def test_bad_input_exit_2_one_line_no_output(media, tiny_card, tmp_path, case):
    out = tmp_path / "out.json"
    src, ck, extra = media["mp4"], tiny_card, list(CLASSES)
    if case == "missing":
        src = media["dir"] / "nope.mp4"
    elif case == "corrupt":
        src = media["corrupt"]
    elif case == "zero":
        src = media["zero"]
    elif case == "empty vocab":
        extra = ["--class", "  "]
    elif case == "unknown checkpoint":
        ck = "no-such-model"
    elif case == "bad stride":
        extra += ["--stride", "0"]
    elif case == "bad overlay name":
        extra += ["--overlay", str(tmp_path / "ov.gif")]
    elif case == "output is a file's child":
        out = media["mp4"] / "out.json"  # parent is a regular file: can never be written
    elif case == "start after end":
        extra += ["--start", "3", "--end", "1"]
    rc, stdout, err = _cli("segment", src, "--checkpoint", ck, "-o", out, *extra, "--quiet")
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("clipvis: error: "), err
    assert not out.exists() and list(tmp_path.iterdir()) == []
