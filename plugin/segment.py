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


def check_media(view, frame_stride: int) -> list[str]:
    """Open every sample's media before the first write: unreadable files fail the run up front.

    Opening decodes one frame and counts frames, so this costs little next to the segmentation.
    """
    from clipvis_core.errors import InputError
    from clipvis_core.video import open_video

    paths = view.values("filepath")
    for path in paths:
        try:
            with open_video(path, frame_stride=frame_stride):
                pass
        except InputError as e:
            raise InputError(f"sample {path}: {e}") from None
    return paths


def segment_view(view, req: SegmentRequest, progress: Progress | None = None) -> SegmentSummary:
    dataset = view._root_dataset
    n = len(check_media(view, req.frame_stride))
    total_tracks, classes, model = 0, set(), ""
    # Only the path is read here; writes go through the full sample so frames can be replaced.
    for i, sample in enumerate(view.select_fields().iter_samples()):
        name = sample.filepath.rsplit("/", 1)[-1]

        def on_frames(done: int, total: int, i=i, name=name):
            if progress is not None:
                progress((i + done / max(total, 1)) / n, f"{name}: frame {done}/{total}")

        tracks = runner.segment_media(sample.filepath, req, on_frames)
        labels = tracks_to_labels(tracks, req.score_threshold, req.max_tracks, req.store_masks)
        write_sample(dataset[sample.id], labels, req.label_field)
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
        "vocabulary": list(req.vocabulary.entries),
        "score_threshold": req.score_threshold,
        "max_tracks": req.max_tracks,
        "frame_stride": req.frame_stride,
        "masks": req.store_masks,
        "summary_field": summary_field(req.label_field),
    }
    dataset.info["clipvis_runs"] = runs
    dataset.save()
