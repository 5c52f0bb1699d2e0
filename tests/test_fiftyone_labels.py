"""VideoTracks -> FiftyOne labels -> YTVIS, and the novelty score, on generated shapes (no model)."""
from __future__ import annotations

import numpy as np
import pytest

from clipvis_core.export.fiftyone import crop_instance, group_tracks, paste_mask, to_ytvis, tracks_to_labels
from clipvis_core.tracks import Track, VideoInfo, VideoTracks, encode_mask, rle_box
from test_fiftyone_env import HEIGHT, NUM_FRAMES, WIDTH, shape_masks
from videogen import shape_frames


def shape_tracks(frame_indices: list[int], scores: dict[str, float], seed: int = 0) -> VideoTracks:
    """Tracks that are exactly the generated shapes, on the given (strided) source frames."""
    frames = shape_frames(NUM_FRAMES, HEIGHT, WIDTH, seed=seed)
    masks = shape_masks(frames)
    tracks = []
    for tid, (label, score) in enumerate(scores.items(), start=7):  # ids need not start at 0
        rles = [encode_mask(masks[label][i]) for i in frame_indices]
        tracks.append(Track(id=tid, label=label, category_id=list(scores).index(label), score=score, masks=rles,
                            boxes=[rle_box(r) for r in rles], frame_scores=[score * 0.9] * len(rles)))
    info = VideoInfo(source="clip.avi", width=WIDTH, height=HEIGHT, fps=10.0, num_frames=len(frame_indices),
                     frame_indices=frame_indices)
    return VideoTracks(video=info, vocabulary=list(scores), tracks=tracks, model="test")


def test_crop_and_paste_are_exact_inverses():
    masks = shape_masks(shape_frames(NUM_FRAMES, HEIGHT, WIDTH))
    for label, per_frame in masks.items():
        for m in per_frame:
            crop = crop_instance(m)
            if not m.any():
                assert crop is None
                continue
            x0, y0, x1, y1 = crop.pixel_box
            assert crop.mask.shape == (y1 - y0, x1 - x0)
            assert crop.mask[0].any() and crop.mask[-1].any() and crop.mask[:, 0].any() and crop.mask[:, -1].any()

            class Det:  # what paste_mask reads of an fo.Detection
                bounding_box, mask = crop.box, crop.mask

            assert np.array_equal(paste_mask(Det, WIDTH, HEIGHT), m), label


def test_tracks_to_labels_frames_boxes_masks_ids_summary():
    stride_frames = [0, 2, 4, 6]
    tracks = shape_tracks(stride_frames, {"disc": 0.9, "rectangle": 0.6, "square": 0.3})
    labels = tracks_to_labels(tracks, score_threshold=0.5)
    # Strided run: labels on source frames 1, 3, 5, 7 (1-based), nothing else.
    assert sorted(labels.frames) == [1, 3, 5, 7]
    assert labels.num_tracks == 2 and labels.classes == ["disc", "rectangle"]
    instance_of, seen = {}, set()
    for fn, dets in labels.frames.items():
        for d in dets.detections:
            seen.add(d.label)
            x, y, w, h = d.bounding_box
            assert d.mask.shape == (round(h * HEIGHT), round(w * WIDTH))
            assert 0 <= x and 0 <= y and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
            assert d.confidence == {"disc": 0.9, "rectangle": 0.6}[d.label]
            assert d.index == {"disc": 7, "rectangle": 8}[d.label]
            assert instance_of.setdefault(d.index, d.instance.id) == d.instance.id  # one instance per track
            assert d["frame_score"] == pytest.approx(d.confidence * 0.9)
            expected = shape_masks(shape_frames(NUM_FRAMES, HEIGHT, WIDTH))[d.label][fn - 1]
            assert np.array_equal(paste_mask(d, WIDTH, HEIGHT), expected)
    assert seen == {"disc", "rectangle"} and len(set(instance_of.values())) == 2
    summary = {c.label: c for c in labels.summary.classifications}
    assert set(summary) == {"disc", "rectangle"}
    assert summary["disc"].confidence == 0.9 and summary["disc"]["num_tracks"] == 1
    # max_tracks keeps the best; store_masks=False keeps boxes only.
    only = tracks_to_labels(tracks, max_tracks=1, store_masks=False)
    assert only.classes == ["disc"]
    assert all(d.mask is None and d.bounding_box for dets in only.frames.values() for d in dets.detections)


def test_square_blinks_so_odd_frames_have_no_square():
    labels = tracks_to_labels(shape_tracks(list(range(NUM_FRAMES)), {"square": 0.8}))
    present = [fn for fn, dets in labels.frames.items() if dets.detections]
    assert present == [1, 3, 5, 7]  # drawn on even 0-based frames
    assert sorted(labels.frames) == list(range(1, NUM_FRAMES + 1))  # empty frames still get (empty) labels


def test_exported_perfect_predictions_score_ap_one():
    from clipvis_core.evaluation import evaluate

    videos_gt, videos_pred = [], []
    for seed in range(2):
        tracks = shape_tracks(list(range(NUM_FRAMES)), {"disc": 0.9, "rectangle": 0.8, "square": 0.7}, seed)
        labels = tracks_to_labels(tracks)
        dets = {fn: list(d.detections) for fn, d in labels.frames.items()}
        videos_gt.append(group_tracks(dets, WIDTH, HEIGHT, NUM_FRAMES))
        videos_pred.append(group_tracks(dets, WIDTH, HEIGHT, NUM_FRAMES))
    gt, classes = to_ytvis(videos_gt, [], gt=True)
    results, classes2 = to_ytvis(videos_pred, classes, gt=False)
    assert classes2 == classes and sorted(classes) == ["disc", "rectangle", "square"]
    assert len(gt["annotations"]) == 6 and len(results) == 6
    square = next(a for a in gt["annotations"] if gt["categories"][a["category_id"] - 1]["name"] == "square")
    assert [s is None for s in square["segmentations"]] == [i % 2 == 1 for i in range(NUM_FRAMES)]
    report = evaluate(gt, results, "ytvis")
    assert report.stats["AP"] == pytest.approx(1.0)
    # One wrong label: that category loses its AP, the other two keep theirs.
    for r in results:
        if r["category_id"] == 1:
            r["category_id"] = 2
    report = evaluate(gt, results, "ytvis")
    assert report.stats["AP"] < 1.0


def test_novelty_score_is_best_confidence_outside_base():
    from plugin.curation import novelty, pairs
    from plugin.sources import normalize

    base = frozenset(normalize(n) for n in ["Aerosol_Can", "person", "zebra"])
    found = novelty([("aerosol can", 0.99), ("widget", 0.4), ("widget", 0.7), ("gizmo", None), ("zebra", 0.9)], base)
    assert found.classes == ["gizmo", "widget"] and found.score == 0.7
    assert novelty([("person", 0.9)], base).score == 0.0
    # Video values come per frame; a detection without confidence keeps its place.
    nested = pairs([["a", "b"], None, ["c"]], [[0.1, None], None, [0.3]])
    assert nested == [("a", 0.1), ("b", None), ("c", 0.3)]
