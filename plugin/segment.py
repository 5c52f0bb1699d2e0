"""Segment every sample of a view and write its labels (the work behind the segment operator)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from clipvis_core.export.fiftyone import tracks_to_labels

from . import runner
from .labels import summary_field, write_sample
from .params import SegmentRequest

# progress(fraction 0-1, label)
Progress = Callable[[float, str], None]


@dataclass
class SegmentSummary:
    samples: int
    tracks: int
    classes: list[str]
    label_field: str
    model: str


def check_media(paths: list[str], frame_stride: int) -> None:
    """Open every sample's media before the first write: unreadable files fail the run up front.

    Opening decodes one frame and counts frames, so this costs little next to the segmentation.
    """
    from clipvis_core.errors import InputError
    from clipvis_core.video import open_video

    for path in paths:
        try:
            with open_video(path, frame_stride=frame_stride):
                pass
        except InputError as e:
            raise InputError(f"sample {path}: {e}") from None


def segment_view(dataset, view, req: SegmentRequest, progress: Progress | None = None) -> SegmentSummary:
    # Ids and paths up front: no database cursor stays open during minutes of inference.
    ids, paths = view.values(["id", "filepath"])
    check_media(paths, req.frame_stride)
    n = len(ids)
    total_tracks, classes, model = 0, set(), ""
    for i, (sample_id, path) in enumerate(zip(ids, paths)):
        name = path.rsplit("/", 1)[-1]

        def on_frames(done: int, total: int, i=i, name=name):
            if progress is not None:
                progress((i + done / max(total, 1)) / n, f"{name}: frame {done}/{total}")

        tracks = runner.segment_media(path, req, on_frames)
        labels = tracks_to_labels(tracks, req.score_threshold, req.max_tracks, req.store_masks)
        write_sample(dataset[sample_id], labels, req.label_field)
        total_tracks += labels.num_tracks
        classes.update(labels.classes)
        model = tracks.model or model
    _record_run(dataset, req, model)
    return SegmentSummary(samples=n, tracks=total_tracks, classes=sorted(classes), label_field=req.label_field, model=model)


def _record_run(dataset, req: SegmentRequest, model: str) -> None:
    """Keep what produced the field in ``dataset.info`` (model version, vocabulary, options)."""
    runs = dict(dataset.info.get("clipvis_runs", {}))
    runs[req.label_field] = {
        "model": model,
        "checkpoint": req.checkpoint,
        "adapter": req.adapter,
        "vocabulary": list(req.vocabulary.entries),
        "score_threshold": req.score_threshold,
        "max_tracks": req.max_tracks,
        "frame_stride": req.frame_stride,
        "precision": req.precision,
        "masks": req.store_masks,
        "summary_field": summary_field(req.label_field),
    }
    dataset.info["clipvis_runs"] = runs
    dataset.save()
