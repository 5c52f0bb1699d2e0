"""VideoTracks <-> FiftyOne labels.

Tracks become frame-level ``fo.Detections``: relative ``[x, y, w, h]`` boxes, boolean masks cropped
to the box, the track id in ``index`` and one ``fo.Instance`` per track shared by all its frames.
Going back (FiftyOne labels -> YTVIS dicts) feeds the evaluator. FiftyOne is imported lazily so
the core never needs it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..tracks import Track, VideoTracks, encode_mask


@dataclass
class CroppedInstance:
    """One track on one frame, in the form FiftyOne stores it."""

    box: list[float]  # relative [x, y, w, h]
    mask: np.ndarray  # bool, shape == the box in pixels
    pixel_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive)


@dataclass
class SampleLabels:
    """Everything written for one sample, computed before anything is saved."""

    frames: dict[int, object]  # 1-based frame number -> fo.Detections
    summary: object  # fo.Classifications: one entry per class found
    num_tracks: int
    classes: list[str] = field(default_factory=list)


def crop_instance(mask: np.ndarray) -> CroppedInstance | None:
    """Full-frame bool mask -> tight integer box + the mask cropped to it (None if empty)."""
    ys = np.flatnonzero(mask.any(axis=1))
    if ys.size == 0:
        return None
    xs = np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    h, w = mask.shape
    box = [x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h]
    return CroppedInstance(box=box, mask=mask[y0:y1, x0:x1].copy(), pixel_box=(x0, y0, x1, y1))


def select_tracks(tracks: VideoTracks, score_threshold: float = 0.0, max_tracks: int | None = None) -> list[Track]:
    """Tracks at or above the threshold, best first, at most ``max_tracks``."""
    kept = sorted((t for t in tracks.tracks if t.score >= score_threshold), key=lambda t: -t.score)
    return kept[:max_tracks] if max_tracks else kept


def tracks_to_labels(
    tracks: VideoTracks,
    score_threshold: float = 0.0,
    max_tracks: int | None = None,
    store_masks: bool = True,
    keyframe_tolerance: float | None = None,
) -> SampleLabels:
    """Build the frame-level detections and the class summary for one video's tracks.

    ``keyframe_tolerance`` (off by default): tag each detection ``keyframe=True/False``, True where
    linear interpolation between the other keyframes would be off by more than that fraction of
    the frame (see ``clipvis_core.keyframes``), so a reviewer can check the few frames that matter.
    """
    import fiftyone as fo

    from ..keyframes import KeyframeOptions, sparse_keyframes

    kept = select_tracks(tracks, score_threshold, max_tracks)
    # FiftyOne frame numbers are 1-based source frames; a stride leaves the skipped frames unlabeled.
    frame_numbers = [i + 1 for i in tracks.video.frame_indices] or list(range(1, len(kept[0].masks) + 1) if kept else [])
    per_frame: dict[int, list] = {fn: [] for fn in frame_numbers}
    # fo.Instance (FiftyOne >= 1.x) links a track's detections across frames; older versions have `index` only.
    linked = hasattr(fo, "Instance")
    for track in kept:
        link = {"instance": fo.Instance()} if linked else {}
        keys = None
        if keyframe_tolerance is not None:
            keys = set(sparse_keyframes(track.boxes, tracks.video.width, tracks.video.height, KeyframeOptions(keyframe_tolerance)))
        for k in track.present_frames():
            crop = crop_instance(track.mask(k))
            if crop is None:
                continue
            per_frame[frame_numbers[k]].append(
                fo.Detection(
                    label=track.label,
                    bounding_box=crop.box,
                    mask=crop.mask if store_masks else None,
                    confidence=float(track.score),
                    index=int(track.id),
                    frame_score=float(track.frame_scores[k]),
                    **link,
                    **({} if keys is None else {"keyframe": k in keys}),
                )
            )
    frames = {fn: fo.Detections(detections=dets) for fn, dets in per_frame.items()}
    return SampleLabels(frames=frames, summary=summarize(kept), num_tracks=len(kept), classes=sorted({t.label for t in kept}))


def summarize(kept: list[Track]):
    """Sample-level summary: per class found, the best track score and the number of tracks."""
    import fiftyone as fo

    best: dict[str, float] = {}
    count: dict[str, int] = {}
    for t in kept:
        best[t.label] = max(best.get(t.label, 0.0), float(t.score))
        count[t.label] = count.get(t.label, 0) + 1
    order = sorted(best, key=lambda c: -best[c])
    return fo.Classifications(
        classifications=[fo.Classification(label=c, confidence=best[c], num_tracks=count[c]) for c in order]
    )


def summary_field(label_field: str) -> str:
    return f"{label_field}_summary"


def write_sample(sample, labels: SampleLabels, label_field: str) -> None:
    """Replace ``label_field`` on the sample (every frame of a video) with ``labels``, in one save,
    so a failure never leaves a half-labelled sample."""
    if sample.media_type == "video":
        # Frames this run did not label (stride, shorter decode) lose the previous run's labels.
        for fn, frame in sample.frames.items():
            if fn not in labels.frames and frame.has_field(label_field) and frame[label_field] is not None:
                frame[label_field] = None
        for fn, dets in labels.frames.items():
            sample.frames[fn][label_field] = dets
    else:
        # An image is a one-frame video: its only frame's detections become the sample field.
        sample[label_field] = labels.frames.get(1) or next(iter(labels.frames.values()), None)
    sample[summary_field(label_field)] = labels.summary
    sample.save()


def paste_mask(det, width: int, height: int) -> np.ndarray:
    """A FiftyOne detection -> full-frame bool mask (box filled when it has no mask)."""
    import cv2

    x, y, w, h = det.bounding_box
    x0, y0 = int(round(x * width)), int(round(y * height))
    x1, y1 = min(width, int(round((x + w) * width))), min(height, int(round((y + h) * height)))
    full = np.zeros((height, width), bool)
    if x1 <= x0 or y1 <= y0:
        return full
    crop = det.mask
    if crop is None:
        full[y0:y1, x0:x1] = True
        return full
    crop = np.asarray(crop).astype(bool)
    if crop.shape != (y1 - y0, x1 - x0):
        crop = cv2.resize(crop.astype(np.uint8), (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST).astype(bool)
    full[y0:y1, x0:x1] = crop
    return full


@dataclass
class VideoLabels:
    """One sample's labels of one field, grouped per track (``index``, else per detection)."""

    width: int
    height: int
    num_frames: int
    # track key -> (label, {0-based frame: detection})
    tracks: dict[object, tuple[str, dict[int, object]]]


def group_tracks(frame_dets: dict[int, list], width: int, height: int, num_frames: int) -> VideoLabels:
    """``{1-based frame: [fo.Detection]}`` -> per-track frames. Detections without ``index`` are single-frame tracks."""
    tracks: dict[object, tuple[str, dict[int, object]]] = {}
    for fn, dets in frame_dets.items():
        for d in dets:
            key = (d.label, d.index) if d.index is not None else ("_det", d.id)
            tracks.setdefault(key, (d.label, {}))[1][fn - 1] = d
    return VideoLabels(width=width, height=height, num_frames=num_frames, tracks=tracks)


def to_ytvis(videos: list[VideoLabels], classes: list[str], gt: bool) -> tuple[dict | list, list[str]]:
    """Grouped labels -> a YTVIS ground-truth dict (``gt=True``) or a YTVIS results list.

    Video ids are 1-based positions in ``videos``; category ids are 1-based positions in ``classes``
    (labels not in ``classes`` are appended).
    """
    classes = list(classes)
    cat_of = {c: i + 1 for i, c in enumerate(classes)}
    vids, anns, results = [], [], []
    for vid, v in enumerate(videos, start=1):
        vids.append({"id": vid, "width": v.width, "height": v.height, "length": v.num_frames,
                     "file_names": [f"{vid:05d}/{i:05d}.jpg" for i in range(v.num_frames)]})
        for label, frames in v.tracks.values():
            if label not in cat_of:
                classes.append(label)
                cat_of[label] = len(classes)
            segs, boxes, areas = [], [], []
            for i in range(v.num_frames):
                det = frames.get(i)
                m = paste_mask(det, v.width, v.height) if det is not None else np.zeros((v.height, v.width), bool)
                segs.append(encode_mask(m) if m.any() else None)
                areas.append(float(m.sum()) if m.any() else None)
                boxes.append([float(b) for b in _pixel_box(det, v.width, v.height)] if det is not None and m.any() else None)
            if gt:
                anns.append({"id": len(anns) + 1, "video_id": vid, "category_id": cat_of[label], "iscrowd": 0,
                             "segmentations": segs, "bboxes": boxes, "areas": areas, "width": v.width,
                             "height": v.height, "length": 1})
            else:
                scores = [d.confidence for d in frames.values() if d.confidence is not None]
                empty = encode_mask(np.zeros((v.height, v.width), bool))
                results.append({"video_id": vid, "category_id": cat_of[label],
                                "score": float(max(scores)) if scores else 1.0,
                                "segmentations": [s if s is not None else empty for s in segs]})
    if not gt:
        return results, classes
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    return {"info": {"description": "exported from FiftyOne by clipvis"}, "licenses": [], "videos": vids,
            "annotations": anns, "categories": cats}, classes


def _pixel_box(det, width: int, height: int) -> list[float]:
    x, y, w, h = det.bounding_box
    return [x * width, y * height, w * width, h * height]


__all__ = [
    "CroppedInstance", "SampleLabels", "VideoLabels", "crop_instance", "select_tracks", "tracks_to_labels",
    "summarize", "paste_mask", "group_tracks", "to_ytvis",
]
