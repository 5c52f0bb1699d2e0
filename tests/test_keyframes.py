"""Sparse keyframes: Label Studio's linear interpolation between the kept keyframes redraws every
per-frame box within the tolerance; appearances/disappearances are kept; settings and per-task
overrides; the reduction on a real camera video (Debian opencv-doc's vtest.avi)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from label_studio_tools.core.label_config import parse_config

from backend.settings import BackendSettings
from backend.strategies import KEYFRAME_TOLERANCE_FIELD, plan
from clipvis_core.errors import InputError
from clipvis_core.keyframes import DEFAULT_TOLERANCE, KeyframeOptions, interpolate, sparse_keyframes
from clipvis_core.tracks import Track, VideoInfo, VideoTracks
from lsconfigs import VIDEO_CONFIG

W, H = 640, 480
ROOT = Path(__file__).resolve().parents[1]


def motion(kind: str, n: int = 300) -> list[list[float] | None]:
    t = np.arange(n, dtype=float)
    if kind == "straight":
        x, y, w, h = 20 + 1.5 * t, 30 + 0.8 * t, np.full(n, 60.0), np.full(n, 40.0)
    elif kind == "curved":  # a circle, growing box
        x, y = 300 + 150 * np.cos(t / 40), 200 + 120 * np.sin(t / 40)
        w, h = 40 + 0.2 * t, 30 + 0.1 * t
    elif kind == "jumping":  # straight, a teleport at 120, a stop-and-go at 200
        x = np.where(t < 120, 10 + t, 400 + 0.5 * (t - 120))
        x = np.where(t >= 200, x[199], x)
        y, w, h = 100 + 0.3 * t, np.full(n, 50.0), np.full(n, 70.0)
    else:  # "noisy": real-detector-like jitter around a straight path
        rng = np.random.default_rng(0)
        x, y = 50 + t + rng.normal(0, 1.0, n), 60 + 0.5 * t + rng.normal(0, 1.0, n)
        w, h = 80 + rng.normal(0, 1.0, n), 120 + rng.normal(0, 1.0, n)
    return [[float(a), float(b), float(c), float(d)] for a, b, c, d in zip(x, y, w, h)]


def max_edge_error(boxes, kept, width, height) -> float:
    """Largest edge error (fraction of the frame) of interpolating every present frame from ``kept``,
    segment by segment (a track is only interpolated within one continuous appearance)."""
    worst = 0.0
    present = [i for i, b in enumerate(boxes) if b is not None]
    for i in present:
        seg = [k for k in kept if all(boxes[j] is not None for j in range(min(i, k), max(i, k) + 1))]
        got = interpolate(seg, [boxes[k] for k in seg], i)
        want = boxes[i]
        ge = [got[0], got[1], got[0] + got[2], got[1] + got[3]]
        we = [want[0], want[1], want[0] + want[2], want[1] + want[3]]
        worst = max(worst, *(abs(a - b) / s for a, b, s in zip(ge, we, (width, height, width, height))))
    return worst


@pytest.mark.parametrize("kind", ["straight", "curved", "jumping", "noisy"])
@pytest.mark.parametrize("tol", [DEFAULT_TOLERANCE, 0.02])
def test_interpolation_stays_within_tolerance(kind, tol):
    boxes = motion(kind)
    kept = sparse_keyframes(boxes, W, H, KeyframeOptions(tol))
    assert kept[0] == 0 and kept[-1] == len(boxes) - 1 and kept == sorted(set(kept))
    assert max_edge_error(boxes, kept, W, H) <= tol + 1e-12
    if kind == "straight":
        assert kept == [0, len(boxes) - 1]
    if kind == "jumping":  # both sides of the teleport and the stop are keyframes
        assert {119, 120, 199} <= set(kept) and len(kept) <= 8
    if kind == "curved":
        assert len(kept) < len(boxes) / 5
    if kind == "noisy" and tol == 0.02:
        assert len(kept) < len(boxes) / 10


def test_appearances_and_disappearances_are_keyframes():
    boxes = motion("straight", 100)
    for i in list(range(30, 40)) + [70]:
        boxes[i] = None
    kept = sparse_keyframes(boxes, W, H)
    assert {0, 29, 40, 69, 71, 99} <= set(kept)
    assert max_edge_error(boxes, kept, W, H) <= DEFAULT_TOLERANCE
    assert sparse_keyframes(boxes, W, H, KeyframeOptions(0.0)) == [i for i, b in enumerate(boxes) if b is not None]
    assert sparse_keyframes([None] * 5, W, H) == []


def _video_tracks(boxes, fps=10.0) -> VideoTracks:
    n = len(boxes)
    empty = {"size": [H, W], "counts": f"{H * W}"}
    track = Track(1, "Vehicle", 0, 0.9, [empty] * n, boxes, [0.9] * n)
    return VideoTracks(VideoInfo("v.mp4", W, H, fps, n, list(range(n))), ["car, automobile", "Ball"], [track])


def ls_interpolate(seq: list[dict], frame: int) -> list[float] | None:
    """Label Studio's editor: linear x/y/width/height between keyframes; off after enabled=false."""
    before = [k for k in seq if k["frame"] <= frame]
    if not before:
        return None
    a = before[-1]
    if a["frame"] == frame:
        return [a["x"], a["y"], a["width"], a["height"]]
    if not a["enabled"]:
        return None
    b = next(k for k in seq if k["frame"] > frame)
    f = (frame - a["frame"]) / (b["frame"] - a["frame"])
    return [a[k] + f * (b[k] - a[k]) for k in ("x", "y", "width", "height")]


@pytest.mark.parametrize("kind", ["curved", "jumping"])
def test_label_studio_sequence_is_sparse_and_redraws_every_frame(kind):
    boxes = motion(kind, 200)
    boxes[150:160] = [None] * 10  # leaves and comes back: two segments
    (target,) = plan(parse_config(VIDEO_CONFIG), VIDEO_CONFIG)  # framerate 10 == file: LS frame = i + 1
    (region,) = target.regions(_video_tracks(boxes), frames_count=200)
    seq = region["value"]["sequence"]
    (dense,) = target.regions(_video_tracks(boxes), frames_count=200, keyframe_tolerance=0)
    assert len(dense["value"]["sequence"]) == 190 and len(seq) < 190 / 3
    assert [k["frame"] for k in seq if not k["enabled"]] == [150, 200]  # segment ends stay
    assert {1, 161} <= {k["frame"] for k in seq}  # appearances stay
    for i, b in enumerate(boxes):
        got = ls_interpolate(seq, i + 1)
        if b is None:
            assert got is None
            continue
        want = [b[0] / W * 100, b[1] / H * 100, b[2] / W * 100, b[3] / H * 100]
        edges = lambda v: [v[0], v[1], v[0] + v[2], v[1] + v[3]]  # noqa: E731
        assert max(abs(p - q) for p, q in zip(edges(got), edges(want))) <= DEFAULT_TOLERANCE * 100 + 1e-9


def test_tolerance_from_settings_and_per_task(monkeypatch):
    boxes = motion("curved", 120)
    (target,) = plan(parse_config(VIDEO_CONFIG), VIDEO_CONFIG)
    vt = _video_tracks(boxes)
    monkeypatch.setenv("CLIPVIS_CHECKPOINT", "random:tiny")
    monkeypatch.setenv("CLIPVIS_KEYFRAME_TOLERANCE", "0.05")
    settings = BackendSettings.from_env()
    assert settings.keyframe_tolerance == 0.05
    coarse = target.regions(vt, 120, {}, settings.keyframe_tolerance)[0]["value"]["sequence"]
    fine = target.regions(vt, 120, {}, DEFAULT_TOLERANCE)[0]["value"]["sequence"]
    per_task = target.regions(vt, 120, {KEYFRAME_TOLERANCE_FIELD: "0.05"}, DEFAULT_TOLERANCE)[0]["value"]["sequence"]
    assert len(coarse) < len(fine) and per_task == coarse
    monkeypatch.setenv("CLIPVIS_KEYFRAME_TOLERANCE", "lots")
    with pytest.raises(InputError, match="not a number") as e:
        BackendSettings.from_env()
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        target.regions(vt, 120, {KEYFRAME_TOLERANCE_FIELD: 5}, DEFAULT_TOLERANCE)


# -- a real camera video -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vtest() -> Path:
    """Debian opencv-doc's vtest.avi (768x576, people walking), fetched with apt-get download + dpkg-deb."""
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_examples.sh"), "opencv-doc"], check=True)
    path = ROOT / ".cache" / "debian" / "opencv-doc" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data" / "vtest.avi"
    assert path.exists()
    return path


def test_keyframe_reduction_on_real_video(vtest, tiny_card):
    """People walking, tracked by the tiny model: every box is redrawn within the tolerance."""
    from clipvis_core.segmenter import SegmentOptions, get_segmenter

    seg = get_segmenter(str(tiny_card), device="cpu")
    tracks = seg.segment(str(vtest), ["person", "car", "bag"], SegmentOptions(min_size=96, max_frames=100))
    assert (tracks.video.width, tracks.video.height) == (768, 576)
    before = after = 0
    for tr in tracks.tracks:
        kept = sparse_keyframes(tr.boxes, 768, 576)
        assert max_edge_error(tr.boxes, kept, 768, 576) <= DEFAULT_TOLERANCE + 1e-12
        before += len(tr.present_frames())
        after += len(kept)
    assert before > 0 and after < before
    print(f"vtest.avi, 100 frames: {before} -> {after} keyframes ({before / after:.1f}x fewer)")


def test_fiftyone_keyframe_tagging_is_opt_in():
    from clipvis_core.export.fiftyone import tracks_to_labels

    boxes = motion("jumping", 200)
    boxes[150:160] = [None] * 10
    vt = _video_tracks(boxes)
    # Non-empty masks so every present frame becomes a detection.
    from clipvis_core.tracks import encode_mask

    full = np.zeros((H, W), bool)
    full[10:20, 10:20] = True
    rle = encode_mask(full)
    vt.tracks[0].masks = [rle if b is not None else vt.tracks[0].masks[0] for b in boxes]
    plain = tracks_to_labels(vt, store_masks=False)
    assert all("keyframe" not in d.field_names for f in plain.frames.values() for d in f.detections)
    tagged = tracks_to_labels(vt, store_masks=False, keyframe_tolerance=DEFAULT_TOLERANCE)
    keys = sorted(fn - 1 for fn, f in tagged.frames.items() for d in f.detections if d["keyframe"])
    assert keys == sparse_keyframes(boxes, W, H)
    assert sum(len(f.detections) for f in tagged.frames.values()) == 190 and len(keys) < 20
