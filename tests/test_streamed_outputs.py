"""Tracks JSON and YTVIS JSON are written element by element: the same text as one json.dumps, with
the writer's own memory flat in the video's length (100 000 frames)."""
from __future__ import annotations

import json
import tracemalloc

from clipvis_core.export.ytvis import iter_ytvis_results, to_ytvis_results, write_ytvis_results
from clipvis_core.tracks import Track, VideoInfo, VideoTracks, encode_mask

import numpy as np


def long_tracks(n: int, k: int = 2) -> VideoTracks:
    """k tracks over n frames: a few distinct masks reused (RAM of the test itself stays small)."""
    masks = []
    for s in range(5):
        m = np.zeros((48, 64), bool)
        m[5 + s:20 + s, 10:30 + s] = True
        masks.append(encode_mask(m))
    empty = encode_mask(np.zeros((48, 64), bool))
    tracks = []
    for j in range(k):
        ms = [masks[i % 5] if i % 7 else empty for i in range(n)]
        boxes = [[10.0, 5.0 + i % 5, 20.0, 15.0] if i % 7 else None for i in range(n)]
        tracks.append(Track(j + 1, "car", 0, 0.5 + j / 10, ms, boxes, [0.25] * n))
    return VideoTracks(VideoInfo("long.mp4", 64, 48, 25.0, n, list(range(n))), ["car"], tracks, "m@x", {"window": 1})


def test_streamed_text_equals_json_dumps(tmp_path):
    vt = long_tracks(50, 3)
    assert vt.save(tmp_path / "t.json").read_text() == vt.to_json()
    assert VideoTracks.load(tmp_path / "t.json").to_dict() == vt.to_dict()
    out = write_ytvis_results(tmp_path / "y.json", iter_ytvis_results(vt, video_id=4))
    assert out.read_text() == json.dumps(to_ytvis_results(vt, video_id=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "y.json"]  # no temp files left


def test_writers_memory_is_flat_for_100k_frames(tmp_path):
    vt = long_tracks(100_000)
    peaks = {}
    tracemalloc.start()
    try:
        for name, write in (("tracks", lambda p: vt.save(p)),
                            ("ytvis", lambda p: write_ytvis_results(p, iter_ytvis_results(vt)))):
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            path = write(tmp_path / f"{name}.json")
            peaks[name] = (tracemalloc.get_traced_memory()[1] - base, path.stat().st_size)
    finally:
        tracemalloc.stop()
    for name, (extra, size) in peaks.items():
        assert size > 5_000_000
        assert extra < 1_000_000, f"{name}: writing {size} bytes took {extra} extra bytes of RAM"
    print({k: f"{v[1] / 1e6:.1f} MB file, {v[0] / 1e3:.0f} kB extra RAM" for k, v in peaks.items()})
