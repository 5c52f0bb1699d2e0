"""Streaming == upstream's whole-video algorithm, on a real video longer than memory and window."""
import contextlib

import numpy as np
import pytest

from clipvis_core.modeling.model import ClipVisModel
from clipvis_core.segmenter import SegmentOptions, get_segmenter
from clipvis_core.tracks import VideoTracks, decode_mask
from clipvis_core.video import open_video
from clipvis_core.whole_video import segment_whole_video
from videogen import make_video

VOCAB = ["person", "car, automobile", "red ball", "green box"]


@pytest.fixture(scope="module")
def seg(tiny_card):
    return get_segmenter(str(tiny_card), device="cpu")


@contextlib.contextmanager
def plain_kernels():
    """The streaming path on upstream's plain PyTorch/MKL kernels instead of oneDNN's (cpu_kernels)."""
    ClipVisModel.upstream_kernels = True
    try:
        yield
    finally:
        ClipVisModel.upstream_kernels = False


def assert_same_tracks(tracks_a, tracks_b, frame_atol: float, max_moved: float = 0.0, score_atol: float = 1e-5) -> None:
    """Same classes and order, track scores within ``score_atol``, < 1 in 10 000 of a track's pixels
    flipped; per-frame scores within ``frame_atol`` except a ``max_moved`` share of them."""
    moved = total = 0
    for a, b in zip(tracks_a, tracks_b, strict=True):
        assert (a.label, a.category_id) == (b.label, b.category_id)
        assert abs(a.score - b.score) < score_atol, (a.score, b.score)
        diff = np.abs(np.asarray(a.frame_scores) - np.asarray(b.frame_scores))
        moved, total = moved + int((diff > frame_atol).sum()), total + len(diff)
        assert diff.max() < 1e-2, diff
        flips = sum(int((decode_mask(x) != decode_mask(y)).sum()) for x, y in zip(a.masks, b.masks))
        assert flips <= 1e-4 * sum(decode_mask(x).size for x in a.masks), flips
    assert moved <= max_moved * total, f"{moved} of {total} per-frame scores moved by > {frame_atol}"


def test_streaming_equals_whole_video(seg, tmp_path):
    path = make_video(tmp_path / "long.avi", num_frames=23, height=90, width=120)
    opts = SegmentOptions(window=4, min_size=96)
    assert 23 > seg.cfg.inference.memory_len and 23 > opts.window
    progress = []
    with plain_kernels():  # the algorithm alone: the whole-video baseline runs plain kernels too
        stream = seg.segment(str(path), VOCAB, opts, progress=progress.append)
    assert [p.frames_done for p in progress[:-1]] == list(range(1, 24))
    assert progress[-1].result is stream and all(p.frames_total == 23 for p in progress)
    with open_video(path) as reader:
        frames = np.stack([f for _, f in reader])
    # Same deformable-attention kernel as streaming: grid_sample's rounding differs from it, and on
    # some CPUs that flips pooled-mask pixels (both kernels are compared in test_decoder_paths.py).
    whole = segment_whole_video(seg, frames, VOCAB, opts, upstream_attention=False)
    assert len(stream.tracks) == len(whole.tracks) == seg.cfg.inference.detections
    assert_same_tracks(stream.tracks, whole.tracks, frame_atol=1e-5)
    # The default oneDNN kernels against the plain ones. A per-frame class score may move where a
    # mask's boundary pixel flipped at the feature map's resolution: the classifier pools CLIP features
    # under the binarised mask, and at this clip's size that map has 12 pixels; the track's score
    # averages it over the 23 frames.
    fast = seg.segment(str(path), VOCAB, opts)
    assert_same_tracks(fast.tracks, stream.tracks, frame_atol=1e-5, max_moved=0.1, score_atol=1e-4)
    stream = fast
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
