"""Streaming == upstream's whole-video algorithm, on a real video longer than memory and window."""
import numpy as np
import pytest

from clipvis_core.segmenter import SegmentOptions, get_segmenter
from clipvis_core.tracks import VideoTracks, decode_mask
from clipvis_core.video import open_video
from clipvis_core.whole_video import segment_whole_video
from videogen import make_video

VOCAB = ["person", "car, automobile", "red ball", "green box"]


@pytest.fixture(scope="module")
def seg(tiny_card):
    return get_segmenter(str(tiny_card), device="cpu")


def test_streaming_equals_whole_video(seg, tmp_path):
    path = make_video(tmp_path / "long.avi", num_frames=23, height=90, width=120)
    opts = SegmentOptions(window=4, min_size=96)
    assert 23 > seg.cfg.inference.memory_len and 23 > opts.window
    progress = []
    stream = seg.segment(str(path), VOCAB, opts, progress=progress.append)
    assert [p.frames_done for p in progress[:-1]] == list(range(1, 24))
    assert progress[-1].result is stream and all(p.frames_total == 23 for p in progress)
    with open_video(path) as reader:
        frames = np.stack([f for _, f in reader])
    whole = segment_whole_video(seg, frames, VOCAB, opts)
    assert len(stream.tracks) == len(whole.tracks) == seg.cfg.inference.detections
    for a, b in zip(stream.tracks, whole.tracks):
        assert (a.label, a.category_id) == (b.label, b.category_id)
        assert abs(a.score - b.score) < 1e-5
        np.testing.assert_allclose(a.frame_scores, b.frame_scores, atol=1e-5)
        flips = sum(int((decode_mask(x) != decode_mask(y)).sum()) for x, y in zip(a.masks, b.masks))
        assert flips <= 4
    # Tracks are complete and at the video's resolution.
    t0 = stream.tracks[0]
    assert len(t0.masks) == 23 and decode_mask(t0.masks[0]).shape == (90, 120)
    assert stream.video.num_frames == 23 and (stream.video.height, stream.video.width) == (90, 120)
    # JSON round trip keeps everything.
    again = VideoTracks.from_json(stream.to_json())
    assert again.to_dict() == stream.to_dict()


def test_window_size_does_not_change_results(seg, tmp_path):
    path = make_video(tmp_path / "w.mp4", num_frames=12, height=64, width=80)
    a = seg.segment(str(path), VOCAB, SegmentOptions(window=10, min_size=96))
    b = seg.segment(str(path), VOCAB, SegmentOptions(window=3, min_size=96))
    # Batch size changes GEMM blocking (float rounding), not results: same classes in the same order.
    assert [t.category_id for t in a.tracks] == [t.category_id for t in b.tracks]
    np.testing.assert_allclose([t.score for t in a.tracks], [t.score for t in b.tracks], atol=1e-5)
