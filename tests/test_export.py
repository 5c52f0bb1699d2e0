"""Exporters on real videos: YTVIS results JSON and the browser-playable overlay video."""
import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from videogen import shape_frames, write_frame_dir, write_video

from clipvis_core.builtin_vocabularies import load_vocabulary
from clipvis_core.errors import InputError
from clipvis_core.export.overlay import track_color, write_overlay
from clipvis_core.export.ytvis import category_ids, to_ytvis_results, write_ytvis_results
from clipvis_core.tracks import Track, VideoInfo, VideoTracks, decode_mask, encode_mask, rle_box
from clipvis_core.video import open_video


def _tracks_from_frames(source, frames, indices, vocabulary=("disc", "box")):
    """Ground-truth-like tracks: the red disc and the green rectangle, segmented by colour."""
    masks = {0: [], 1: []}
    for i in indices:
        f = frames[i].astype(int)
        masks[0].append((f[..., 0] > 150) & (f[..., 1] < 100))
        masks[1].append((f[..., 1] > 150) & (f[..., 0] < 100))
    tracks = []
    for k, ms in masks.items():
        rles = [encode_mask(m) for m in ms]
        tracks.append(Track(id=k + 1, label=vocabulary[k], category_id=k, score=0.9 - 0.2 * k, masks=rles,
                            boxes=[rle_box(r) for r in rles], frame_scores=[0.9 - 0.2 * k] * len(ms)))
    h, w = frames.shape[1:3]
    info = VideoInfo(source=str(source), width=w, height=h, fps=10.0, num_frames=len(indices), frame_indices=list(indices))
    return VideoTracks(video=info, vocabulary=list(vocabulary), tracks=tracks), masks


@pytest.fixture
def frame_dir(tmp_path):
    frames = shape_frames(9, 61, 83)  # odd size on purpose
    return write_frame_dir(tmp_path / "frames", frames, ext=".png"), frames


def test_ytvis_results_roundtrip(tmp_path, frame_dir):
    d, frames = frame_dir
    vt, masks = _tracks_from_frames(d, frames, range(9))
    res = to_ytvis_results(vt, video_id=7)
    assert [r["category_id"] for r in res] == [1, 2]  # label + 1
    assert [r["video_id"] for r in res] == [7, 7] and res[0]["score"] == pytest.approx(0.9)
    out = write_ytvis_results(tmp_path / "out" / "results.json", res)
    loaded = json.loads(out.read_text())
    for r, k in zip(loaded, (0, 1)):
        assert len(r["segmentations"]) == 9
        assert all(isinstance(s["counts"], str) for s in r["segmentations"])
        for seg, m in zip(r["segmentations"], masks[k]):
            assert np.array_equal(decode_mask(seg), m)
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]  # no temp files left


def test_ytvis_uses_dataset_category_ids():
    coco = load_vocabulary("coco")
    assert category_ids(coco) == [m["id"] for m in coco.meta]
    assert category_ids(["a", "b", "c"]) == [1, 2, 3]
    sub = load_vocabulary("lvvis:novel")
    ids = category_ids(sub)
    assert ids == [m["id"] for m in sub.meta] and ids != list(range(1, len(sub) + 1))


def _probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height,nb_read_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["streams"][0]


def _check_tinted(path, vt, masks, positions):
    """Masked pixels moved towards the track colour in the decoded overlay."""
    cap = cv2.VideoCapture(str(path))
    ok_frames = 0
    for pos in range(vt.video.num_frames):
        ok, bgr = cap.read()
        assert ok
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[: vt.video.height, : vt.video.width].astype(float)
        if pos in positions:
            m = masks[1][pos]  # green rectangle, track id 2
            if m.sum() > 30:
                inner = cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                want = np.array(track_color(2), float)
                ref = np.array([40, 200, 60], float)
                got = rgb[inner].mean(0)
                assert np.linalg.norm(got - want) < np.linalg.norm(ref - want)
                ok_frames += 1
    cap.release()
    assert ok_frames > 0


def test_overlay_h264_mp4_via_ffmpeg(tmp_path, frame_dir):
    assert shutil.which("ffmpeg"), "ffmpeg is required (apt-get install ffmpeg)"
    d, frames = frame_dir
    vt, masks = _tracks_from_frames(d, frames, range(9))
    seen = []
    out = write_overlay(vt, tmp_path / "ov" / "overlay.mp4", progress=lambda i, n: seen.append((i, n)))
    assert seen[-1] == (9, 9) and len(seen) == 9
    s = _probe(out)
    assert (s["codec_name"], s["pix_fmt"]) == ("h264", "yuv420p")
    assert (s["width"], s["height"]) == (84, 62) and int(s["nb_read_frames"]) == 9  # padded to even
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 9
    cap.release()
    _check_tinted(out, vt, masks, range(9))
    assert [p.name for p in out.parent.iterdir()] == ["overlay.mp4"]


@pytest.mark.parametrize("name,codec", [("overlay.webm", "vp8"), ("overlay.mp4", "vp9")])
def test_overlay_opencv_fallback(tmp_path, name, codec):
    frames = shape_frames(20, 48, 64)
    src = write_video(tmp_path / "src.avi", frames, fps=10)
    reader = open_video(src, frame_stride=3)
    decoded = np.stack([f for _, f in open_video(src)])
    vt, masks = _tracks_from_frames(src, decoded, reader.info.frame_indices)
    out = write_overlay(vt, tmp_path / name, use_ffmpeg=False)
    s = _probe(out)
    assert s["codec_name"] == codec
    assert int(s["nb_read_frames"]) == len(reader.info.frame_indices) == 7
    _check_tinted(out, vt, masks, range(7))


def test_overlay_webm_via_ffmpeg(tmp_path, frame_dir):
    d, frames = frame_dir
    vt, _ = _tracks_from_frames(d, frames, [0, 2, 4])
    out = write_overlay(vt, tmp_path / "o.webm", min_score=0.8)
    s = _probe(out)
    assert s["codec_name"] == "vp9" and int(s["nb_read_frames"]) == 3


def test_overlay_bad_input_leaves_no_file(tmp_path, frame_dir):
    d, frames = frame_dir
    vt, _ = _tracks_from_frames(d, frames, range(9))
    with pytest.raises(InputError, match=r"\.mp4 or \.webm"):
        write_overlay(vt, tmp_path / "o.avi")
    other = write_frame_dir(tmp_path / "other", shape_frames(9, 40, 40))
    with pytest.raises(InputError, match="tracks are for"):
        write_overlay(vt, tmp_path / "o.mp4", source=other)
    with pytest.raises(InputError, match="not found"):
        write_overlay(vt, tmp_path / "o.mp4", source=tmp_path / "gone.mp4")
    short = write_frame_dir(tmp_path / "short", frames[:4], ext=".png")
    with pytest.raises(InputError, match="has 4 frames"):
        write_overlay(vt, tmp_path / "o.mp4", source=short)
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))


def test_overlay_failing_midway_leaves_no_file(tmp_path, frame_dir):
    d, frames = frame_dir
    vt, _ = _tracks_from_frames(d, frames, range(9))
    (d / "00005.png").write_bytes(b"broken")  # decoding fails after 5 frames were written
    out_dir = tmp_path / "out"
    with pytest.raises(InputError, match="cannot read image"):
        write_overlay(vt, out_dir / "o.mp4")
    assert list(out_dir.iterdir()) == []
