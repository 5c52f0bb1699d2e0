"""VideoTracks <-> FiftyOne labels.

Tracks become frame-level ``fo.Detections``: relative ``[x, y, w, h]`` boxes, boolean masks cropped
to the box, the track id in ``index`` and one ``fo.Instance`` per track shared by all its frames.
Going back (FiftyOne labels -> YTVIS dicts) feeds the evaluator. FiftyOne is imported lazily so
the core never needs it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Iterator

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
    """What is written for one sample. Frames are built on demand (``iter_frames``, one at a time),
    so writing a long video never holds all its detections; ``frames`` builds them all at once."""

    frame_numbers: list[int]  # 1-based frame numbers this run labels, in order
    summary: object  # fo.Classifications: one entry per class found
    num_tracks: int
    classes: list[str] = field(default_factory=list)
    build: Callable[[int], object] | None = field(default=None, repr=False)  # position -> fo.Detections

    def iter_frames(self) -> Iterator[tuple[int, object]]:
        for k, fn in enumerate(self.frame_numbers):
            yield fn, self.build(k)

    @functools.cached_property
    def frames(self) -> dict[int, object]:
        """1-based frame number -> fo.Detections, every frame (short clips, images, tests)."""
        return dict(self.iter_frames())


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
    # fo.Instance (FiftyOne >= 1.x) links a track's detections across frames; older versions have `index` only.
    links = [{"instance": fo.Instance()} if hasattr(fo, "Instance") else {} for _ in kept]
    keys = [None if keyframe_tolerance is None else
            set(sparse_keyframes(t.boxes, tracks.video.width, tracks.video.height, KeyframeOptions(keyframe_tolerance)))
            for t in kept]

    def build(k: int):
        dets = []
        for track, link, kf in zip(kept, links, keys):
            crop = crop_instance(track.mask(k)) if track.boxes[k] is not None else None
            if crop is None:
                continue
            dets.append(fo.Detection(
                label=track.label,
                bounding_box=crop.box,
                mask=crop.mask if store_masks else None,
                confidence=float(track.score),
                index=int(track.id),
                frame_score=float(track.frame_scores[k]),
                **link,
                **({} if kf is None else {"keyframe": k in kf}),
            ))
        return fo.Detections(detections=dets)
    return SampleLabels(frame_numbers=frame_numbers, summary=summarize(kept), num_tracks=len(kept),
                        classes=sorted({t.label for t in kept}), build=build)


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


FRAME_CHUNK = 1000  # frames per database write: bounds the detections held in memory


def write_sample(sample, labels: SampleLabels, label_field: str, chunk: int = FRAME_CHUNK) -> None:
    """Replace ``label_field`` on the sample (every frame of a video) with ``labels``.

    A video is written in bulk: its frames' labels are built and written ``chunk`` frames per
    database write, so RAM stays flat on long videos and the write count is frames / chunk, not
    one per frame. The summary field is cleared first and written last: a sample that has a
    summary has all its frames (a failure mid-way leaves none).
    """
    summary = summary_field(label_field)
    if sample.media_type != "video":
        # An image is a one-frame video: its only frame's detections become the sample field.
        sample[label_field] = labels.frames.get(1) or next(iter(labels.frames.values()), None)
        sample[summary] = labels.summary
        sample.save()
        return
    ds, sid = sample.dataset, sample.id
    one = ds.select(sid)
    if ds.has_sample_field(summary):
        one.clear_sample_field(summary)
    if ds.has_frame_field(label_field):
        one.clear_frame_field(label_field)  # frames this run does not label (stride, shorter decode)
    else:
        import fiftyone as fo

        ds.add_frame_field(label_field, fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    ids = _frame_ids(ds, sid, label_field, labels.frame_numbers)
    batch: dict[str, object] = {}
    for fn, dets in labels.iter_frames():
        batch[ids[fn]] = dets
        if len(batch) >= chunk:
            ds.set_values(f"frames.{label_field}", batch, key_field="frames.id")
            batch = {}
    if batch:
        ds.set_values(f"frames.{label_field}", batch, key_field="frames.id")
    ds.set_values(summary, {sid: labels.summary}, key_field="id")
    sample.reload()  # the caller's object sees what was written


def _frame_ids(ds, sample_id: str, label_field: str, frame_numbers: list[int]) -> dict[int, str]:
    """Frame number -> frame id of the sample; the missing frame documents are created in one write."""
    def read() -> dict[int, str]:
        fns, ids = ds.select(sample_id).values(["frames.frame_number", "frames.id"])
        return dict(zip(fns[0] or [], ids[0] or []))
    have = read()
    missing = [fn for fn in frame_numbers if fn not in have]
    if not missing:
        return have
    ds.set_values(f"frames.{label_field}", {sample_id: dict.fromkeys(missing)}, key_field="id", expand_schema=False)
    return read()


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
